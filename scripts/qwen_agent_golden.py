"""Record golden outputs of Qwen-Agent's Qwen3-VL zoom tool from a checkout of QwenLM/Qwen-Agent.

    python scripts/qwen_agent_golden.py CHECKOUT [--cases 3000] [--out tests/golden/qwen_agent]

Reads `qwen_agent/tools/image_zoom_in_qwen3vl.py` from the checkout, takes the tool class's
`maybe_resize_bbox` and `smart_resize` (and the rounding helpers they call) out of it with `ast`,
and runs them on seeded cases the way its `call` does: a 0–1000 box on an image of a given size →
the crop box (floats, before PIL rounds it) and the size the crop is resized to. Only the inputs
and outputs are written (`<commit>.json`); no Qwen-Agent code is copied into this project.
`tests/test_qwen_agent_zoom.py` holds our `tools.crop.qwen_agent_zoom` to that file.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import random
import subprocess
from pathlib import Path
from typing import Any

TOOL_FILE = "qwen_agent/tools/image_zoom_in_qwen3vl.py"
METHODS = (
    "round_by_factor",
    "ceil_by_factor",
    "floor_by_factor",
    "smart_resize",
    "maybe_resize_bbox",
)
MIN_PIXELS = 256 * 32 * 32
"""The `min_pixels` the tool's `call` passes to `smart_resize` for the crop."""


def tool_methods(source: str) -> Any:
    """An object with the tool class's pure methods, compiled from the checkout's source."""
    tree = ast.parse(source)
    (tool,) = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    wanted = [
        item for item in tool.body if isinstance(item, ast.FunctionDef) and item.name in METHODS
    ]
    missing = set(METHODS) - {item.name for item in wanted}
    if missing:
        raise SystemExit(f"{TOOL_FILE} has no {sorted(missing)}: a different version of the tool")
    holder = ast.ClassDef(
        name="Methods", bases=[], keywords=[], body=wanted, decorator_list=[], type_params=[]
    )
    module = ast.fix_missing_locations(ast.Module(body=[holder], type_ignores=[]))
    namespace: dict[str, Any] = {"math": math, "ceil": math.ceil, "floor": math.floor}
    exec(compile(module, TOOL_FILE, "exec"), namespace)
    return namespace["Methods"]()


def cases(count: int, seed: int) -> list[dict[str, Any]]:
    """Image sizes from thumbnails to 8K; boxes anywhere in 0–1000, many under 32 px, some
    reaching past the image, some degenerate (zero width)."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        width, height = rng.choice([(64, 48), (640, 480), (1500, 900), (3840, 2160), (7680, 4320)])
        if index % 5 == 0:
            width, height = rng.randint(40, 8000), rng.randint(40, 8000)
        x1, y1 = rng.uniform(-50, 1000), rng.uniform(-50, 1000)
        side = rng.choice([0.0, 1.0, 4.0, 10.0, 50.0, 300.0, 1100.0])
        x2 = x1 + rng.uniform(0, side)
        y2 = y1 + rng.uniform(0, side)
        made.append({"image": [width, height], "bbox_2d": [round(v, 2) for v in (x1, y1, x2, y2)]})
    return made


def run_case(methods: Any, case: dict[str, Any]) -> dict[str, Any]:
    """What the tool's `call` computes for one case (or the error it reports)."""
    width, height = case["image"]
    x1, y1, x2, y2 = case["bbox_2d"]
    absolute = (
        x1 / 1000.0 * width,
        y1 / 1000.0 * height,
        x2 / 1000.0 * width,
        y2 / 1000.0 * height,
    )
    try:
        left, top, right, bottom = methods.maybe_resize_bbox(*absolute, width, height)
        if round(right) < round(left) or round(bottom) < round(top):
            raise ValueError("PIL refuses to crop an inverted box")  # as Image.crop does
        new_w, new_h = methods.smart_resize(
            right - left, bottom - top, factor=32, min_pixels=MIN_PIXELS
        )
    except Exception as error:  # the tool reports it as a text observation
        return {**case, "error": type(error).__name__}
    return {**case, "box": [left, top, right, bottom], "size": [new_w, new_h]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("tests/golden/qwen_agent"))
    args = parser.parse_args()
    path = args.checkout / TOOL_FILE
    if path.is_symlink() or not path.is_file():
        raise SystemExit(f"{path} is not a file of a Qwen-Agent checkout")
    git = ["git", "-C", str(args.checkout), "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    methods = tool_methods(path.read_text(encoding="utf-8"))
    results = [run_case(methods, case) for case in cases(args.cases, args.seed)]
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{commit[:7]}.json"
    document = {"repository": "QwenLM/Qwen-Agent", "commit": commit, "file": TOOL_FILE,
                "min_pixels": MIN_PIXELS, "cases": results}  # fmt: skip
    target.write_text(json.dumps(document, indent=0, allow_nan=False) + "\n", encoding="utf-8")
    errors = sum("error" in item for item in results)
    print(f"wrote {target}: {len(results)} cases ({errors} reported errors)")


if __name__ == "__main__":
    main()
