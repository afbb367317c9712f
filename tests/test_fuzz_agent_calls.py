"""The standing tool-call fuzzing suite of the model-driven graph (issue 21).

`CONVERSATIONS` seeded conversations (seed = `BASE_SEED + k`), spread evenly over every tool
convention and both call formats (`openai`: the server's `tool_calls`; `text`: calls written in
the reply, sometimes also parsed by the server), each a scripted model replying with hostile
calls: brackets 100,000 deep, integers of 400 and 5,000 digits, NaN / Infinity / 1e999,
unicode digits, wrong types, missing keys, tuple keys, sets, nested junk, unknown tools and
images, degenerate and out-of-image boxes, unclosed tags, several calls at once. Over all of
them: no exception escapes, no view outside the image, no zero-area crop, no run past
`max_hops + 2` model calls, every call recorded as a view or an error, every record strict
JSON; every 8th conversation is checkpointed too (msgpack, as traces are). A finding names its seed, convention and format; replay one with
`ZOOM_FUZZ_SEEDS=<seed> pytest tests/test_fuzz_agent_calls.py`, or run more with
`ZOOM_FUZZ_CONVERSATIONS=20000`.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from zoom_refine import ZoomContext, build_agent_graph
from zoom_refine.agent.tool_conventions import TOOL_CONVENTIONS, ToolConventionName
from zoom_refine.testing import ReplyFake

BASE_SEED = 21_000
CONVERSATIONS = int(os.environ.get("ZOOM_FUZZ_CONVERSATIONS", "2000"))
FORMATS = ("openai", "text")
CHECKPOINTED = 8
"""Every 8th conversation runs with a checkpointer (state stored as msgpack, as traces are)."""
IMAGE_SIZE = (96, 64)
"""Small, so 2,000 conversations with their crops take seconds."""

TOOL = {"crop": "crop", "qwen3_vl": "image_zoom_in_tool", "deepeyes": "image_zoom_in_tool",
    "mini_o3": "grounding"}  # fmt: skip
BOX_KEY = {"crop": "box", "qwen3_vl": "bbox_2d", "deepeyes": "bbox_2d", "mini_o3": "bbox_2d"}
SCALE = {"crop": 1.0, "qwen3_vl": 1000.0, "deepeyes": 96.0, "mini_o3": 1.0}


def fuzz_model(replies: list[AIMessage]) -> ReplyFake:
    """Replays `replies`, then answers `A`; binds tools like a server; counts its calls."""
    script = iter(replies)
    return ReplyFake(reply=lambda messages: next(script, None) or AIMessage("Answer: A"))


# --- hostile values -----------------------------------------------------------------------------

RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 400, "9" * 5000,
    "1e300", "-0.0", "0", "1", "0.5", "1000", "1e-320"]  # fmt: skip
JUNK_VALUES: list[Any] = [None, True, "", "x", "\u00b2", "\u0661", [], {}, [[[]]], {"a": [1]},
    -1, 10**400, 1e300, float("nan"), float("inf"), "observation_\u00b9", "img0", "img9", 0, 2.0,
    ["a", 0, 1, 1], [0, 0, 1], [0, 0, 1, 1, 1], [True, False, True, True]]  # fmt: skip


def fair_box(rng: random.Random, convention: str) -> list[float]:
    """A box in the convention's frame: mostly sensible, sometimes degenerate or outside."""
    scale = SCALE[convention]
    kind = rng.random()
    values = [rng.uniform(-0.3, 1.3) * scale for _ in range(4)]
    if kind < 0.15:
        values[2], values[3] = values[0], values[1]  # zero area
    elif kind < 0.25:
        values = [rng.choice([-1e6, 1e6, -5.0, 0.0]) for _ in range(4)]
    elif kind < 0.6:
        x, y = rng.uniform(0, 0.9), rng.uniform(0, 0.9)
        values = [x * scale, y * scale, (x + 0.1) * scale, (y + 0.1) * scale]
    return [round(v, rng.choice([0, 1, 3])) for v in values]


def hostile_args(rng: random.Random, convention: str) -> dict[str, Any]:
    """Arguments with sensible keys and some of them spoiled."""
    args: dict[str, Any] = {BOX_KEY[convention]: fair_box(rng, convention)}
    if convention == "crop":
        args["image_id"] = rng.choice(["img0", "img0", "img1", "img2"])
        if rng.random() < 0.4:
            args["box_format"] = rng.choice(["norm1", "norm1000", "pixel", "inches", 3])
    elif convention == "qwen3_vl":
        args |= {"img_idx": rng.choice([0, 0, 1, 2, "1", 1.0]), "label": "thing"}
    elif convention == "mini_o3":
        args["source"] = rng.choice(["original_image", "observation_1", "observation_2"])
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        key = rng.choice([*args, "extra"])
        if rng.random() < 0.3:
            args.pop(key, None)
        else:
            args[key] = rng.choice(JUNK_VALUES)
    return args


def deep(rng: random.Random) -> str:
    return rng.choice(["[", "{", '{"a":']) * rng.choice([40, 40, 1_500, 1_500, 100_000])


def text_body(rng: random.Random, convention: str) -> str:
    """The JSON (or Python literal, or junk) between a text call's tags."""
    args = hostile_args(rng, convention)
    kind = rng.randrange(12)  # 0-4 hostile in form; the rest well formed, values spoiled or not
    if kind == 0:
        return deep(rng)
    if kind == 1:  # a raw number JSON cannot or Python will not read
        box = ", ".join(rng.choice(RAW_NUMBERS) for _ in range(4))
        inner = f'{{"{BOX_KEY[convention]}": [{box}], "img_idx": 0, "source": "original_image"}}'
        return (
            inner
            if convention == "mini_o3"
            else f'{{"name": "{TOOL[convention]}", "arguments": {inner}}}'
        )
    if kind == 2:  # Python literals: tuple keys, sets, bytes, complex
        junk = rng.choice(["(1, 2): 3", "'box': {0, 1}", "'box': b'xx'", "'box': [1j, 0, 1, 1]",
            "'box': (0, 0, 1, 1)"])  # fmt: skip
        inner = f"{{{junk}, 'image_id': 'img0'}}"
        return (
            inner
            if convention == "mini_o3"
            else f"{{'name': '{TOOL[convention]}', 'arguments': {inner}}}"
        )
    if kind == 3:
        return rng.choice(["", "null", "[1, 2]", '"text"', '{"name": 5}', '{"arguments": {}}',
            '{"name": "crop", "arguments": "{\\"box\\": [0, 0, 1, 1]}"}', "{'a': 1"])  # fmt: skip
    if kind == 4:  # nested junk inside the arguments
        nest: Any = rng.choice(JUNK_VALUES[:12])
        for _ in range(rng.choice([3, 30, 60])):
            nest = {"n": nest} if rng.random() < 0.5 else [nest]
        args["extra"] = nest
    name = rng.choice([TOOL[convention]] * 15 + ["rotate", "", "Crop"])
    try:
        dumped = json.dumps(args if convention == "mini_o3" else {"name": name, "arguments": args})
    except ValueError:  # a huge integer: Python cannot print it, a model could write it
        dumped = "{" + "9" * 5000 + "}"
    return dumped


def text_reply(rng: random.Random, convention: str) -> str:
    tag = "grounding" if convention == "mini_o3" else "tool_call"
    blocks = [
        f"<{tag}>{text_body(rng, convention)}</{tag}>" for _ in range(rng.choice([1, 1, 2, 3]))
    ]
    if rng.random() < 0.1:
        blocks[-1] = blocks[-1].removesuffix(f"</{tag}>")  # cut off by the token limit
    prose = rng.choice(["", "<think>hmm</think>", "Answer: B", "<answer>C</answer>", "Answer: Z",
        "<think>" * 3000, "<answer>" * 3000])  # fmt: skip
    return prose + "\n".join(blocks)


def openai_reply(rng: random.Random, convention: str, turn: int) -> AIMessage:
    """A server's reply: parsed `tool_calls` with hostile arguments, unparseable ones."""
    calls = []
    for k in range(rng.choice([1, 1, 2, 3])):
        args = hostile_args(rng, convention)
        if rng.random() < 0.2:
            args[BOX_KEY[convention]] = [rng.choice([10**5000, float("nan"), float("inf"),
                -float("inf"), 10**400, "1e999", 0.5]) for _ in range(4)]  # fmt: skip
        if rng.random() < 0.1:
            nest: Any = 0
            for _ in range(rng.choice([40, 400])):
                nest = [nest]
            args["box"] = nest
        name = rng.choice([TOOL[convention]] * 15 + ["rotate", "", "grounding"])
        call_id = rng.choice([f"c{turn}-{k}", f"c{turn}-{k}", ""])
        calls.append({"name": name, "args": args, "id": call_id, "type": "tool_call"})
    invalid = []
    if rng.random() < 0.2:
        invalid.append({"name": TOOL[convention], "args": deep(rng)[:2000], "id": f"bad{turn}",
            "error": "JSON", "type": "invalid_tool_call"})  # fmt: skip
    content = rng.choice(["", "Let me zoom.", "Answer: B"])
    return AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid)


def conversation(seed: int) -> tuple[ToolConventionName, str, int, list[AIMessage]]:
    """Seed → (convention, call format, max_hops, the scripted replies)."""
    rng = random.Random(seed)
    convention = TOOL_CONVENTIONS[seed % len(TOOL_CONVENTIONS)]
    call_format = FORMATS[(seed // len(TOOL_CONVENTIONS)) % len(FORMATS)]
    max_hops = rng.choice([1, 2, 3])
    replies = []
    for turn in range(max_hops + 3):  # more than the graph may ask for
        if call_format == "openai" and rng.random() < 0.8:
            replies.append(openai_reply(rng, convention, turn))
        else:
            text = text_reply(rng, convention)
            if call_format == "text" and rng.random() < 0.25:  # the server parsed it too
                calls = [{"name": TOOL[convention], "args": hostile_args(rng, convention),
                    "id": f"srv{turn}", "type": "tool_call"}]  # fmt: skip
                replies.append(AIMessage(content=text, tool_calls=calls))
            else:
                replies.append(AIMessage(content=text))
    return convention, call_format, max_hops, replies


# --- the checks ---------------------------------------------------------------------------------


@dataclass
class Finding:
    seed: int
    convention: str
    call_format: str
    problem: str

    def __str__(self) -> str:
        return f"seed {self.seed} ({self.convention}, {self.call_format}): {self.problem}"


def check_run(result: dict[str, Any], model: ReplyFake, max_hops: int) -> list[str]:
    """What is wrong with one finished run (empty when nothing is)."""
    problems: list[str] = []
    width, height = IMAGE_SIZE
    for view in result.get("views", []):
        x1, y1, x2, y2 = view["box"]
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            problems.append(f"view {view['id']} {view['box']} outside or empty")
    if model.calls > max_hops + 2:
        problems.append(f"{model.calls} model calls with max_hops {max_hops}")
    records = [call for step in result["steps"] for call in step.get("tool_calls", [])]
    for call in records:
        if (call["view"] is None) == (call["error"] is None):
            problems.append(f"call {call['id']!r} is neither a view nor an error: {call}")
    run = [call["view"] for call in records if call["view"] is not None]
    failed = [step for step in result["steps"] if step["node"] == "crop"]
    if len(run) != len(result["views"]) - 1 + len(failed):
        problems.append(
            f"{len(run)} calls run, {len(result['views']) - 1} views, {len(failed)} failed"
        )
    try:
        json.dumps(result, allow_nan=False)
    except (ValueError, TypeError) as error:
        problems.append(f"not strict JSON: {error}")
    return problems


def fuzz(seeds: list[int], image: bytes) -> tuple[list[Finding], dict[str, int]]:
    """Run each seed's conversation; every finding, and counts of what the runs did."""
    graphs = [build_agent_graph(), build_agent_graph(checkpointer=InMemorySaver())]
    findings: list[Finding] = []
    counts = {"conversations": 0, "tool_calls": 0, "errors": 0, "views": 0, "model_calls": 0}
    inputs = {"image": image, "question": "Which colour?", "options": ["red", "blue"]}
    for seed in seeds:
        convention, call_format, max_hops, replies = conversation(seed)
        model = fuzz_model(replies)
        context = ZoomContext(model=model, tool_convention=convention,
            tool_call_format=call_format, max_hops=max_hops)  # fmt: skip
        try:
            config: dict[str, Any] = {"recursion_limit": context.recursion_limit}
            checkpointed = seed % CHECKPOINTED == 0
            if checkpointed:
                config["configurable"] = {"thread_id": str(seed)}
            result = graphs[checkpointed].invoke(inputs, context=context, config=config)
        except Exception as error:  # the finding: an exception escaped the graph
            problems = [f"{type(error).__name__}: {str(error)[:300]}"]
        else:
            problems = check_run(result, model, max_hops)
            records = [call for step in result["steps"] for call in step.get("tool_calls", [])]
            counts["conversations"] += 1
            counts["tool_calls"] += len(records)
            counts["errors"] += sum(call["error"] is not None for call in records)
            counts["views"] += len(result["views"]) - 1
            counts["model_calls"] += model.calls
        findings += [Finding(seed, convention, call_format, problem) for problem in problems]
    return findings, counts


def scene_png() -> bytes:
    image = Image.new("RGB", IMAGE_SIZE, (200, 200, 200))
    image.paste((255, 0, 0), (60, 30, 80, 50))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def seeds() -> list[int]:
    chosen = os.environ.get("ZOOM_FUZZ_SEEDS")
    if chosen:
        return [int(seed) for seed in chosen.split(",")]
    return [BASE_SEED + k for k in range(CONVERSATIONS)]


@pytest.mark.reliability(
    "agent graph",
    f"tool-call fuzzing: {CONVERSATIONS} seeded conversations over 4 tool conventions x 2 call "
    "formats (deep brackets, huge integers, NaN/Infinity, unicode digits, wrong types, missing "
    "and tuple keys, nested junk)",
    "0 exceptions, 0 views outside the image, 0 zero-area crops, 0 runs past max_hops + 2 model "
    "calls, every call a view or an error, every record strict JSON",
)
def test_fuzzed_tool_calls_never_break_the_agent_graph() -> None:
    chosen = seeds()
    started = time.perf_counter()
    findings, counts = fuzz(chosen, scene_png())
    seconds = time.perf_counter() - started
    summary = f"seeds {chosen[0]}..{chosen[-1]}: {counts} in {seconds:.1f} s"
    print(summary)
    assert not findings, f"{len(findings)} findings ({summary}):\n" + "\n".join(
        str(finding) for finding in findings[:20]
    )
    assert counts["conversations"] == len(chosen)
    if len(chosen) >= 2000:  # the suite exercises both outcomes, in bulk
        assert counts["views"] > 500 and counts["errors"] > 2000
