"""Hostile model output, property-based: parsers never raise, every parsed box becomes a valid crop.

A model can write anything: prose, truncated or nested brackets, NaN / inf / 1e308 / huge ints,
several boxes, Arabic-Indic or full-width digits, InternVL's `<box>` and Qwen's `bbox_2d` forms in
any frame. Bad output is not an error (DESIGN.md): the parsers return None or a valid value, a
parsed box always becomes a crop with integer corners inside the image and positive area, and when
no box parses the graph records 'no box'. Examples are derandomized and the database is off, so a
run is reproducible and leaves nothing behind; the counts below add up to 10,000 examples.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from langchain_core.tools import ToolException
from PIL import Image

from zoom_refine import ZoomContext, build_graph
from zoom_refine.agent.parsing import (
    find_choice,
    parse_boxes,
    parse_choice,
    parse_confidence,
    parse_open_answer,
)
from zoom_refine.agent.regions import NO_BOX, read_regions
from zoom_refine.testing import ScriptedVisionModel
from zoom_refine.tools.boxes import BOX_FRAMES, Box
from zoom_refine.tools.crop import plan_crop
from zoom_refine.tools.crop_tool import CropFrame, make_crop
from zoom_refine.tools.settings import ImageSettings
from zoom_refine.tools.views import View, shown_size_for

PARSER_EXAMPLES = 3000
CROP_EXAMPLES = 3000
RAW_BOX_EXAMPLES = 3800
GRAPH_EXAMPLES = 200
"""The graph runs a real LangGraph invocation per example (about 20 ms), so it gets fewer."""


TOTAL_EXAMPLES = PARSER_EXAMPLES + CROP_EXAMPLES + RAW_BOX_EXAMPLES + GRAPH_EXAMPLES
assert TOTAL_EXAMPLES >= 10_000  # the issue asks for at least 10,000 generated model outputs


def profile(examples: int) -> Any:
    """Explicit, reproducible settings: no deadline (CI machines stall), no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- strategies ----------------------------------------------------------------------------------

ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"
FULL_WIDTH = "０１２３４５６７８９"
SPECIAL_NUMBERS = (
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "-1e308",
    "1e309",
    "1.7976931348623157e308",
    "5e-324",
    "-0",
    "0",
    "1",
    "1000",
    "1001",
    "0.5",
    ".5",
    "5.",
    "1e3",
    "9" * 400,
    "-" + "9" * 40,
)


def unicode_digits(alphabet: str) -> st.SearchStrategy[str]:
    """Numbers written in another script's digits ('٠.٣', '１２０'), which `\\d` matches."""
    whole = st.text(alphabet=alphabet, min_size=1, max_size=4)
    return st.tuples(whole, st.text(alphabet=alphabet, max_size=3)).map(
        lambda parts: parts[0] + ("." + parts[1] if parts[1] else "")
    )


plausible = st.one_of(
    st.floats(min_value=-0.5, max_value=1.5).map(lambda v: f"{v:.3f}"),
    st.integers(min_value=0, max_value=1000).map(str),
    st.integers(min_value=0, max_value=8000).map(str),
)
numbers: st.SearchStrategy[str] = st.one_of(
    plausible,
    plausible,
    plausible,
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    unicode_digits(ARABIC_INDIC),
    unicode_digits(FULL_WIDTH),
)
separators = st.sampled_from([", ", ",", " ", "; ", "\t", ",\n", "  ,  "])

WHOLE_BOX_TEMPLATES = (
    "[{}]",
    "({})",
    "Bounding box: [{}]",
    "**Bounding box:** [{}]",
    "Bounding box 1: [{}]",
    "bbox = ({})",
    "<box>[[{}]]</box>",
    '{{"bbox_2d": [{}], "label": "sign"}}',
    "[[[{}]]]",
)
"""One box in each dialect: the paper's 0–1 list, InternVL's `<box>`, Qwen's `bbox_2d` JSON."""
BOX_TEMPLATES = (
    *WHOLE_BOX_TEMPLATES,
    "<box>[[{}], [{}]]</box>",
    "[[{}], [{}]]",
    "Bounding box 1: [{}]\nBounding box 2: [{}]",
    "[{}",
    "{}]",
    "<box>[[{}]",
)


@st.composite
def box_texts(draw: st.DrawFn) -> str:
    """One box in some model's dialect, possibly truncated or with the wrong count of numbers."""
    template = draw(st.sampled_from(BOX_TEMPLATES))
    lists = []
    for _ in range(template.count("{}")):
        count = draw(st.sampled_from([4] * 8 + [3, 5, 2, 8]))
        separator = draw(separators)
        lists.append(separator.join(draw(numbers) for _ in range(count)))
    text = template.format(*lists)
    truncated = draw(st.integers(0, 3)) == 0
    if truncated and len(text) > 1:  # cut off mid-box, as a reply hitting max_new_tokens is
        text = text[: draw(st.integers(min_value=1, max_value=len(text) - 1))]
    return text


letters = st.sampled_from(list("ABCDEabcde1Z٣"))
answer_lines = st.one_of(
    letters.map(lambda letter: f"Answer: {letter}"),
    letters.map(lambda letter: f"Rechecked Answer: ({letter})"),
    letters.map(lambda letter: f"**Final answer**: {letter}."),
    letters.map(lambda letter: f"The answer is {letter} because"),
    letters.map(lambda letter: f"{letter}. "),
    st.just("Answer: A large cat"),
)
confidence_lines = st.one_of(
    st.tuples(numbers, st.sampled_from(["", "%", "/10", "/100", " / 10", "/0"])).map(
        lambda parts: f"Confidence: {parts[0]}{parts[1]}"
    ),
    st.sampled_from(["high", "very low", "Medium", "moderate"]).map(
        lambda word: f"confidence is {word}"
    ),
    st.sampled_from(["low confidence", "Confidence level: very high", "Confidence:"]),
)
prose = st.text(max_size=40)
"""Any unicode, including brackets, digits of every script and control characters."""


@st.composite
def replies(draw: st.DrawFn) -> str:
    """A whole reply: a few pieces of prose, answers, boxes and confidences in any order."""
    boxes = box_texts()  # listed twice: half the pieces try to be a box
    pieces = draw(
        st.lists(st.one_of(prose, boxes, boxes, answer_lines, confidence_lines), max_size=6)
    )
    if draw(st.booleans()):  # a well-formed box somewhere, so half the replies reach the crop
        template = draw(st.sampled_from(WHOLE_BOX_TEMPLATES))
        numbers_text = draw(separators).join(draw(plausible) for _ in range(4))
        pieces.insert(draw(st.integers(0, len(pieces))), template.format(numbers_text))
    joiner = draw(st.sampled_from(["\n", " ", "", "\n\n"]))
    return joiner.join(pieces)


option_letters = st.lists(st.sampled_from(list("ABCDEFGH")), min_size=2, max_size=6, unique=True)
image_sizes = st.one_of(
    st.sampled_from([(1, 1), (1, 5000), (5000, 1), (7680, 4320), (3840, 2160), (2, 3)]),
    st.tuples(st.integers(1, 9000), st.integers(1, 9000)),
)
image_settings = st.builds(
    ImageSettings,
    padding=st.sampled_from([0.0, 0.1, 0.5, 10.0]),
    padding_mode=st.sampled_from(["region", "box"]),
    min_crop_side=st.sampled_from([0, 1, 448, 10_000]),
)


@st.composite
def regions(draw: st.DrawFn, size: tuple[int, int]) -> Box:
    """The region the model was shown: the whole image or a crop of it (a nested hop)."""
    width, height = size
    if draw(st.booleans()):
        return Box.full(size)
    x1 = draw(st.integers(0, width - 1))
    y1 = draw(st.integers(0, height - 1))
    return Box(x1, y1, draw(st.integers(x1 + 1, width)), draw(st.integers(y1 + 1, height)))


def assert_valid_crop(crop: Box, size: tuple[int, int]) -> None:
    width, height = size
    assert all(type(value) is int for value in crop.as_tuple()), crop
    assert 0 <= crop.x1 < crop.x2 <= width and 0 <= crop.y1 < crop.y2 <= height, (crop, size)


# --- parsers -------------------------------------------------------------------------------------


@pytest.mark.reliability(
    "Model output",
    "hostile replies to the answer and confidence parsers",
    f"{PARSER_EXAMPLES} generated replies: never raise; letter among the options or None; "
    "confidence in [0, 1] or None",
)
@profile(PARSER_EXAMPLES)
@given(reply=replies(), offered=option_letters, rechecked=st.booleans())
def test_answer_and_confidence_parsers_never_raise(
    reply: str, offered: list[str], rechecked: bool
) -> None:
    choice = parse_choice(reply, offered, rechecked=rechecked)
    assert choice is None or choice in offered
    found = find_choice(reply, offered, rechecked=rechecked)
    assert (found[0] if found else None) == choice
    if found:  # the offset points at the letter (token confidence reads the token there)
        assert reply[found[1]].upper() == found[0]
    answer = parse_open_answer(reply, rechecked=rechecked)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip() and answer)
    confidence = parse_confidence(reply)
    assert confidence is None or (math.isfinite(confidence) and 0.0 <= confidence <= 1.0)


# --- boxes and crops -----------------------------------------------------------------------------


@pytest.mark.reliability(
    "Model output",
    "hostile replies to the box parser and crop planning (1×1 to 8K images)",
    f"{CROP_EXAMPLES} generated replies: parse_boxes never raises, gives finite numbers; every "
    "box in every frame maps to an integer crop inside the image with positive area",
)
@profile(CROP_EXAMPLES)
@given(data=st.data(), reply=replies(), size=image_sizes, config=image_settings)
def test_every_parsed_box_becomes_a_crop_inside_the_image(
    data: st.DataObject, reply: str, size: tuple[int, int], config: ImageSettings
) -> None:
    boxes = parse_boxes(reply)
    for box in boxes:
        assert len(box) == 4 and all(math.isfinite(value) for value in box), box
    region = data.draw(regions(size))
    shown = shown_size_for((region.width, region.height), data.draw(st.sampled_from([28, 2048])))
    view = View(id="img0", box=region, hop=0, shown_size=shown)
    context = ZoomContext(
        model="openai:none",
        padding=config.padding,
        padding_mode=config.padding_mode,
        min_crop_side=config.min_crop_side,
        max_regions=data.draw(st.sampled_from([1, 3, 8])),
        prompt_style=data.draw(st.sampled_from(["paper", "internvl"])),
    )
    family = data.draw(st.sampled_from(["internvl", "qwen2_5_vl", "qwen3_vl", "other"]))
    processed = data.draw(st.sampled_from([None, shown, (1, 1), (448, 448)]))
    read = read_regions(reply, view, size, family, context, processed_size=processed)
    assert len(read.boxes) == min(len(boxes), context.max_regions)
    event(f"boxes parsed: {min(len(boxes), 3)}{'+' if len(boxes) > 3 else ''}")
    for reading in read.boxes:  # auto box_format: every finite box is read in some frame
        assert reading.frame is not None and reading.pixels is not None, reading
        assert all(math.isfinite(value) for value in reading.pixels), reading
    assert 1 <= len(read.regions) <= len(read.boxes) or not read.boxes
    for item in read.regions:  # merged or single, each region is a valid crop
        assert all(math.isfinite(value) for value in item.box)
        assert_valid_crop(plan_crop(item.box, region, size, context), size)


SMALL_IMAGES = {size: Image.new("RGB", size, (90, 90, 90)) for size in [(1, 1), (1, 500), (64, 48)]}
raw_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0, 1.0, 1000.0]),
    st.integers(-(10**20), 10**20).map(float),
)


@pytest.mark.reliability(
    "Model output",
    "crop tool called with raw numbers (NaN, inf, ±1e308, inverted, zero-area)",
    f"{RAW_BOX_EXAMPLES} generated boxes: finite → a crop inside the image with positive area; "
    "otherwise a ToolException (reported to the model), never another exception",
)
@profile(RAW_BOX_EXAMPLES)
@given(
    box=st.lists(raw_values, min_size=4, max_size=4),
    frame=st.sampled_from([*BOX_FRAMES, "original"]),
    size=st.sampled_from(list(SMALL_IMAGES)),
    config=image_settings,
    nested=st.booleans(),
)
def test_the_crop_tool_gives_a_crop_or_a_tool_error(
    box: list[float], frame: CropFrame, size: tuple[int, int], config: ImageSettings, nested: bool
) -> None:
    original = SMALL_IMAGES[size]
    full = View("img0", Box.full(size), 0, shown_size_for(size, 28))
    views = [full.to_record()]
    if nested:  # a crop of the lower-right part, as a later hop sees it
        part = Box(size[0] // 2, size[1] // 2, size[0], size[1])
        views.append(View("img1", part, 1, (part.width, part.height)).to_record())
    try:
        crop = make_crop(original, views, views[-1]["id"], box, frame, config)
    except ToolException as error:
        assert not all(math.isfinite(value) for value in box), error
        return
    assert all(math.isfinite(value) for value in box)
    assert_valid_crop(crop.view.box, size)
    assert crop.image.size == crop.view.shown_size


# --- the graph -----------------------------------------------------------------------------------


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


GRAPH_IMAGE_SIZE = (320, 200)
GRAPH_IMAGE = png_bytes(GRAPH_IMAGE_SIZE)
GRAPH = build_graph(retry_policy=None)
OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}


@pytest.mark.reliability(
    "Model output",
    "hostile replies through the real graph (scripted model)",
    f"{GRAPH_EXAMPLES} generated conversations: no exception; each crop inside the image with "
    "positive area, or stop_reason no_box with the note recorded",
)
@profile(GRAPH_EXAMPLES)
@given(
    script=st.lists(replies(), min_size=6, max_size=6),
    max_regions=st.sampled_from([1, 3]),
    max_hops=st.sampled_from([1, 2]),
    prompt_style=st.sampled_from(["paper", "internvl"]),
)
def test_the_graph_records_a_crop_or_no_box(
    script: list[str], max_regions: int, max_hops: int, prompt_style: str
) -> None:
    model = ScriptedVisionModel(replies=script)
    context = ZoomContext(
        model=model,
        image_format="png",
        max_regions=max_regions,
        max_hops=max_hops,
        prompt_style=prompt_style,  # type: ignore[arg-type]
    )
    inputs: Any = {"image": GRAPH_IMAGE, "question": "Which colour?", "options": OPTIONS}
    result = GRAPH.invoke(inputs, context=context, config={"recursion_limit": 50})

    assert result["answer"] is None or result["answer"] in OPTIONS
    confidence = result.get("confidence")
    assert confidence is None or 0.0 <= confidence <= 1.0
    for view in result["views"]:
        assert_valid_crop(Box.from_list(view["box"]), GRAPH_IMAGE_SIZE)
    # Every crop was made: no box ever reaches the crop tool that it cannot cut.
    assert result["stop_reason"] != "crop_failed"
    assert all(step["node"] != "crop" for step in result["steps"]), result["steps"]
    event(f"stop_reason: {result['stop_reason']}")  # shown by --hypothesis-show-statistics
    localizes = [step for step in result["steps"] if step["node"] == "localize"]
    last = localizes[-1]
    if not parse_boxes(last["raw"]):
        assert result["stop_reason"] == "no_box" and last["note"] == NO_BOX
    else:  # auto box_format: any finite box is read in some frame and cropped
        assert result["stop_reason"] in ("confident", "max_hops")
        assert len(result["views"]) >= 2
