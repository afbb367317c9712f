"""The official Zoom-Refine functions, taken from a checkout the user names, to be *run*.

`zoom-refine official verify` compares the `official` preset with the official repository's own
functions (xavier-yu114/Zoom-Refine; the preset was written against commit fc6c1ad). Nothing of
that repository is shipped here: this module reads the checkout's files with `ast`, keeps only
top-level functions and assignments it names (plus two string / f-string assignments inside the
scripts' main loops, which are data), and executes that source in a fresh namespace holding only
the modules those functions use (`re`, `math`, `io`, `os`, `json`, `sys`, Pillow) and a `print`
that records instead of writing. Running them is running the checkout's code: verify only a
checkout you trust. A file that is a symlink leading out of the checkout is refused.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import math
import os
import re
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile

from zoom_refine.tools.errors import OfficialCheckoutError

BASE_FILE = "zoomrefine/ZoomRefine_Base.py"
ZOOMREFINE_ACC_FILE = "zoomrefine/zoomrefine_acc.py"
EVAL_ACC_FILE = "evaluation/eval_acc.py"
CONVERT_FILE = "scripts/convert.py"
BUILD_JSON_FILE = "evaluation/build_json.py"

BASE_NAMES = (
    "MAX_SIZE_BYTES",
    "MAX_WIDTH",
    "MAX_HEIGHT",
    "compress_image_to_memory",
    "find_closest_aspect_ratio",
    "dynamic_preprocess",
    "parse_bbox",
    "expand_bbox",
    "extract_letter_choice",
    "parse_rechecked_answer",
    "crop_image_from_bbox",
)
"""What is taken from `BASE_FILE`: the image limits and the functions the preset reproduces."""


@dataclass
class Recorder:
    """A `print` for the executed functions: keeps the lines (the baseline scorer reports its
    counts only by printing them)."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, *values: Any, **options: Any) -> None:
        self.lines.append(str(options.get("sep", " ")).join(str(value) for value in values))


@dataclass
class OfficialCode:
    """The functions and values taken from one checkout (see the module docstring)."""

    checkout: Path
    commit: str | None
    base: dict[str, Any]
    """`BASE_NAMES`, run with the real Pillow."""
    base_stub: Callable[[Any], dict[str, Any]]
    """`BASE_NAMES` again, with `Image` replaced by the given stand-in (for crop geometry and
    tile grids without pixels)."""
    truncated_flag: bool | None
    """The value `BASE_FILE` gives `ImageFile.LOAD_TRUNCATED_IMAGES` at its top level (None when
    it sets none)."""
    phrase_to_remove: str
    """The phrase the main loop removes from the stored question."""
    evaluate_predictions: Callable[..., Any]
    calculate_accuracies: Callable[..., Any]
    transform_json_data: Callable[[str], str]
    hr_bench_prompt: Callable[..., str]
    """`BUILD_JSON_FILE`'s `user_content` f-string, evaluated with `question`, `choice_a`…`d`."""
    recorder: Recorder


def load_official(checkout: Path) -> OfficialCode:
    """Read and execute the needed parts of `checkout` (module docstring). One-line
    OfficialCheckoutError when a file or name is missing, or a file leads out of it."""
    root = checkout.resolve()
    if not root.is_dir():
        raise OfficialCheckoutError(f"not a folder: {checkout} (pass a checkout of Zoom-Refine)")
    recorder = Recorder()
    base_tree, base_source = _parsed(root, BASE_FILE)
    base_code = top_level_source(base_tree, base_source, BASE_NAMES, BASE_FILE)
    base = run_source(base_code, BASE_FILE, recorder)
    _, acc_source = _parsed(root, ZOOMREFINE_ACC_FILE)
    _, eval_source = _parsed(root, EVAL_ACC_FILE)
    _, convert_source = _parsed(root, CONVERT_FILE)
    build_tree, build_source = _parsed(root, BUILD_JSON_FILE)
    scripts: dict[str, Any] = {}
    for name, source, path in (
        ("calculate_accuracies", acc_source, ZOOMREFINE_ACC_FILE),
        ("evaluate_predictions", eval_source, EVAL_ACC_FILE),
        ("transform_json_data", convert_source, CONVERT_FILE),
    ):
        code = top_level_source(ast.parse(source), source, (name,), path)
        scripts[name] = run_source(code, path, recorder)[name]
    template = nested_assignment(build_tree, "user_content", BUILD_JSON_FILE)
    phrase = nested_assignment(base_tree, "phrase_to_remove", BASE_FILE)
    phrase_value = ast.literal_eval(phrase)
    if not isinstance(phrase_value, str):
        raise OfficialCheckoutError(f"{BASE_FILE}: phrase_to_remove is not a string literal")
    compiled = compile(ast.Expression(body=template), BUILD_JSON_FILE, "eval")

    def hr_bench_prompt(**cells: Any) -> str:
        return str(eval(compiled, {"__builtins__": builtins}, dict(cells)))

    def base_stub(image_module: Any) -> dict[str, Any]:
        return run_source(base_code, BASE_FILE, recorder, image_module=image_module)

    del build_source
    return OfficialCode(
        checkout=root,
        commit=checkout_commit(root),
        base=base,
        base_stub=base_stub,
        truncated_flag=truncated_setting(base_tree),
        phrase_to_remove=phrase_value,
        evaluate_predictions=scripts["evaluate_predictions"],
        calculate_accuracies=scripts["calculate_accuracies"],
        transform_json_data=scripts["transform_json_data"],
        hr_bench_prompt=hr_bench_prompt,
        recorder=recorder,
    )


def checkout_file(root: Path, relative: str) -> Path:
    """`relative` inside `root`, refused when missing or when it (or a folder on the way) is a
    symlink leading out of `root`."""
    path = root / relative
    if not path.exists():
        raise OfficialCheckoutError(
            f"{relative} not found in {root} (pass the root of a Zoom-Refine checkout)"
        )
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise OfficialCheckoutError(
            f"{relative} in {root} is a symlink leading out of the checkout ({resolved}); refused"
        )
    if not resolved.is_file():
        raise OfficialCheckoutError(f"{relative} in {root} is not a file")
    return resolved


def _parsed(root: Path, relative: str) -> tuple[ast.Module, str]:
    path = checkout_file(root, relative)
    try:
        source = path.read_text(encoding="utf-8")
        return ast.parse(source, filename=relative), source
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as error:
        raise OfficialCheckoutError(f"cannot read {relative} in {root}: {error}") from error


def top_level_source(tree: ast.Module, source: str, names: Iterable[str], where: str) -> str:
    """The source of the top-level functions and single-name assignments called `names`, in
    file order; OfficialCheckoutError naming those missing."""
    wanted, found = set(names), []
    taken: set[str] = set()
    for node in tree.body:
        name = _defined_name(node)
        if name in wanted:
            segment = ast.get_source_segment(source, node)
            if segment is not None:
                found.append(segment)
                taken.add(name)
    missing = sorted(wanted - taken)
    if missing:
        raise OfficialCheckoutError(f"{where} lacks {', '.join(missing)} at its top level")
    return "\n\n".join(found) + "\n"


def _defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.FunctionDef):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return target.id if isinstance(target, ast.Name) else None
    return None


def nested_assignment(tree: ast.Module, name: str, where: str) -> ast.expr:
    """The value of the first assignment to `name` anywhere in the file (a main loop's string)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return node.value
    raise OfficialCheckoutError(f"{where} assigns no {name}")


def truncated_setting(tree: ast.Module) -> bool | None:
    """The constant a top-level `ImageFile.LOAD_TRUNCATED_IMAGES = …` sets, if any."""
    value: bool | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Attribute) and target.attr == "LOAD_TRUNCATED_IMAGES":
                literal = ast.literal_eval(node.value)
                value = bool(literal)
    return value


def run_source(
    code: str, where: str, recorder: Recorder, *, image_module: Any = None
) -> dict[str, Any]:
    """Execute extracted `code` in a fresh namespace (module docstring); its names."""
    namespace: dict[str, Any] = {
        "__builtins__": builtins,
        "__name__": "official_" + Path(where).stem,
        "re": re,
        "math": math,
        "io": io,
        "os": os,
        "json": json,
        "sys": _QuietSys(recorder),
        "Image": image_module if image_module is not None else Image,
        "ImageFile": ImageFile,
        "print": recorder,
    }
    try:
        exec(compile(code, where, "exec"), namespace)
    except Exception as error:  # their top-level code failed: a user-facing one-liner
        raise OfficialCheckoutError(f"{where}: extracted code failed to run: {error}") from error
    return namespace


class _QuietSys(types.SimpleNamespace):
    """`sys` for the executed code: `sys.stderr` goes to the recorder."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(stderr=_Sink(recorder), stdout=_Sink(recorder), maxsize=sys.maxsize)


class _Sink(io.StringIO):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    def write(self, text: str) -> int:
        if text.strip():
            self._recorder.lines.append(text.rstrip("\n"))
        return len(text)


def checkout_commit(root: Path) -> str | None:
    """The commit `root` is at, read from its `.git` (no git command run), if it has one."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: …"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip()
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
        loose = base / ref
        return loose.read_text().strip() if loose.is_file() else None
    except (OSError, IndexError):
        return None
