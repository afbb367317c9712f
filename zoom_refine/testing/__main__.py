"""`python -m zoom_refine.testing`: train (or find in the cache) the protocol-trained tiny models."""

import argparse

from zoom_refine.testing.model_cache import cache_root, main

parser = argparse.ArgumentParser(
    prog="python -m zoom_refine.testing",
    description="Train (or find in the cache) the protocol-trained tiny InternVL3, Qwen2.5-VL "
    "and Qwen3-VL models the tests and the offline examples use (about a minute each on 2 CPU "
    "cores, Qwen3-VL two), and print where they are and their training reports.",
    epilog=f"Cache: {cache_root()} (set ZOOM_REFINE_TINY_MODEL_CACHE to move it).",
)
parser.parse_args()
main()
