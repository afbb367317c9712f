"""Serving throughput on a real vLLM: `zoom-refine eval --concurrency 1 / 4 / 16` side by side.

Starts vLLM (CPU build, the venv of `zoom_refine.testing.vllm_env`, built if missing) with the
protocol-trained tiny InternVL3 (-hf) and the flags our defaults need (`tests/servers.py`:
`VLLM_ZOOM_REFINE_ARGS`), then runs `zoom-refine eval hr-bench --method zoom-refine` on HR-Bench
TSVs of 1500x900 synthetic scenes (every image different, so no run finds another run's images in
the prefix cache) at each concurrency, rounds interleaved (1, 4, 16, 1, 4, 16, …) so machine
noise spreads evenly, and one `--method both` run for the token counts. Prints:

- samples/s per concurrency (median over rounds) and the speed-up over concurrency 1;
- the prefix-cache hit fraction: refine's `cached_tokens` over the localize prompt rounded down
  to vLLM's block size (whole blocks are all a prefix cache can reuse), and vLLM's own counter
  (`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` over the whole run);
- prompt tokens per sample, zoom-refine vs baseline.

The eval runs in this process (the CLI's `app`, as `zoom-refine eval` runs it), timed from the
call to its return: imports and the server start are not counted.

    python benchmarks/serving.py [--samples 16] [--rounds 2] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # servers.py, dataset_fixtures: test helpers

import dataset_fixtures as fixtures  # noqa: E402
from servers import RunningServer, start_vllm, vllm_block_size, vllm_metrics  # noqa: E402

from zoom_refine.cli import app  # noqa: E402
from zoom_refine.testing import tiny_models as tm  # noqa: E402
from zoom_refine.testing.vllm_env import ensure_vllm_env  # noqa: E402

IMAGE_SIZE = (1500, 900)


def write_dataset(path: Path, samples: int, tag: str) -> Path:
    """An HR-Bench TSV of `samples` distinct protocol scenes (the protocol question and options)."""
    rows = []
    for index in range(samples):
        buffer = io.BytesIO()
        tm.protocol_image(IMAGE_SIZE, f"{tag}-{index}").save(buffer, format="JPEG", quality=90)
        cell = base64.b64encode(buffer.getvalue()).decode("ascii")
        rows.append(
            [index, tm.PROTOCOL_QUESTION, "A", "single", *tm.PROTOCOL_OPTIONS, "cycle1", cell]
        )
    return fixtures.write_tsv(path, fixtures.HR_HEADER, rows)


def eval_run(
    server: RunningServer, data: Path, out: Path, concurrency: int, method: str
) -> tuple[float, list[dict[str, Any]]]:
    """`zoom-refine eval` through the CLI; (seconds, prediction records)."""
    args = [
        "eval",
        "hr-bench",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        f"openai:{server.model_name}",
        "--base-url",
        server.base_url,
        "--model-family",
        "internvl",
        "--max-patches",
        str(tm.PROTOCOL_MAX_PATCHES),
        "--server-tile-budget",
        "vllm",
        "--method",
        method,
        "--concurrency",
        str(concurrency),
    ]
    started = time.perf_counter()
    try:
        app(args, standalone_mode=False)
    except SystemExit as exit_:  # typer's commands may exit 0 on success
        if exit_.code not in (0, None):
            raise
    seconds = time.perf_counter() - started
    lines = (out / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} samples failed: {failed[0].get('error')}")
    return seconds, records


def prefix_hits(records: list[dict[str, Any]], block: int) -> tuple[int, int]:
    """(refine's cached tokens, localize's prompt tokens in whole blocks), summed over samples."""
    cached = reusable = 0
    for record in records:
        steps = record["steps"]
        for earlier, later in itertools.pairwise(steps):
            reusable += earlier["usage"]["input_tokens"] // block * block
            cached += later["usage"].get("cached_tokens", 0)
    return cached, reusable


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus counter's samples (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=16, help="samples per eval run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()

    started = time.perf_counter()
    env = ensure_vllm_env()
    env_seconds = time.perf_counter() - started
    model = tm.trained_protocol_model("internvl3")
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, Python {sys.version.split()[0]}"
    )
    how = "from the cache" if env.cached else f"built in {env.build_seconds:.0f} s"
    print(f"vLLM venv {how} ({env_seconds:.1f} s): {env.path}")
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        with start_vllm(model, python=env.python) as server:
            print(f"vLLM server healthy after {time.perf_counter() - started:.1f} s")
            block = vllm_block_size(server)
            warm = write_dataset(folder / "warm.tsv", 2, "warm")
            seconds, _ = eval_run(server, warm, folder / "warm", 2, "zoom-refine")
            print(f"warm-up eval (2 samples): {seconds:.1f} s")
            before = vllm_metrics(server)

            rates: dict[int, list[float]] = {c: [] for c in args.concurrency}
            cached = reusable = 0
            for round_ in range(args.rounds):
                for concurrency in args.concurrency:
                    tag = f"r{round_}-c{concurrency}"
                    data = write_dataset(folder / f"{tag}.tsv", args.samples, tag)
                    seconds, records = eval_run(
                        server, data, folder / tag, concurrency, "zoom-refine"
                    )
                    rates[concurrency].append(args.samples / seconds)
                    hit, whole = prefix_hits(records, block)
                    cached, reusable = cached + hit, reusable + whole
                    print(f"  {tag}: {args.samples / seconds:.2f} samples/s ({seconds:.1f} s)")
            after = vllm_metrics(server)

            data = write_dataset(folder / "both.tsv", args.samples, "both")
            _, both = eval_run(server, data, folder / "both", max(args.concurrency), "both")

    print()
    print(
        f"zoom-refine eval, {args.samples} samples of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
        f"{args.rounds} rounds, median samples/s:"
    )
    print("| concurrency | samples/s | vs 1 |")
    print("| ---: | ---: | ---: |")
    base = statistics.median(rates[args.concurrency[0]])
    for concurrency, values in rates.items():
        rate = statistics.median(values)
        print(f"| {concurrency} | {rate:.2f} | {rate / base:.2f}x |")
    print()
    queries = metric(after, "vllm:prefix_cache_queries_total") - metric(
        before, "vllm:prefix_cache_queries_total"
    )
    hits = metric(after, "vllm:prefix_cache_hits_total") - metric(
        before, "vllm:prefix_cache_hits_total"
    )
    print(
        f"prefix cache (block size {block}): refine reused {cached / max(reusable, 1):.1%} of "
        f"the localize prompt's whole blocks; vLLM counted {hits / max(queries, 1):.1%} of all "
        f"prompt tokens as hits ({hits:.0f} of {queries:.0f})"
    )
    for method in ("baseline", "zoom-refine"):
        records = [r for r in both if r["method"] == method]
        tokens = statistics.mean(r["usage"]["input_tokens"] for r in records)
        cached_tokens = statistics.mean(r["usage"].get("cached_tokens", 0) for r in records)
        calls = statistics.mean(r["usage"]["model_calls"] for r in records)
        print(
            f"{method}: {tokens:.0f} prompt tokens per sample ({cached_tokens:.0f} from the "
            f"prefix cache), {calls:.1f} model calls"
        )


if __name__ == "__main__":
    main()
