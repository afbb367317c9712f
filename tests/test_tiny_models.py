"""The tiny test models: the Qwen2.5-VL build, the cache keys of the trained ones (per family),
and the protocol-trained models driving the whole Zoom-Refine graph through the real local backend
(localize → crop → refine, and zoom again). Qwen3-VL's in-process runs are in test_qwen3_vl.py."""

from __future__ import annotations

import ast
import math
import shutil
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zoom_refine import build_graph
from zoom_refine.agent.parsing import parse_boxes, parse_choice, parse_confidence
from zoom_refine.agent.prompts import localize_prompt, refine_prompt, zoom_again_prompt
from zoom_refine.testing import images_in, texts_in
from zoom_refine.testing import tiny_models as tm

LETTERED = dict(zip("ABCD", tm.PROTOCOL_OPTIONS, strict=True))
WINDOWED = ("internvl3", "qwen2_5_vl")
"""The families whose decoder has a sliding window (Qwen3-VL's has none)."""


def expected_crop(
    box: tuple[float, float, float, float],
    region: tuple[int, int, int, int],
    image_size: tuple[int, int],
    padding: float = 0.1,
    min_side: int = 448,
) -> list[int]:
    """The crop by hand: `box` in original pixels, padded by `padding` of the region's sides,
    grown to `min_side` around its centre (shifted inside the image), rounded outwards."""
    sides = (region[2] - region[0], region[3] - region[1])
    edges = []
    for axis in (0, 1):
        low = max(box[axis] - padding * sides[axis], 0)
        high = min(box[axis + 2] + padding * sides[axis], image_size[axis])
        side = min(min_side, image_size[axis])
        if high - low < side:
            centre = (low + high) / 2
            low, high = centre - side / 2, centre + side / 2
            if low < 0:
                low, high = 0, side
            if high > image_size[axis]:
                low, high = image_size[axis] - side, image_size[axis]
        edges.append((math.floor(low), math.ceil(high)))
    (x1, x2), (y1, y2) = edges
    return [x1, y1, x2, y2]


def fraction_box(
    fractions: tuple[float, float, float, float], region: tuple[int, int, int, int]
) -> tuple[float, float, float, float]:
    """A box given as fractions of `region` (original pixels) → original pixels."""
    width, height = region[2] - region[0], region[3] - region[1]
    return (
        region[0] + fractions[0] * width,
        region[1] + fractions[1] * height,
        region[0] + fractions[2] * width,
        region[1] + fractions[3] * height,
    )


# --- protocol constants and conversations (no model) ------------------------------------------


def test_qwen_resize_rule_gives_the_documented_frames() -> None:
    assert tm.qwen_resized_size(1500, 900) == tm.QWEN_PROTOCOL_RESIZED == (700, 420)
    assert tm.qwen_resized_size(2048, 1229) == (700, 420)  # a 3000 x 1800 image's view
    assert tm.qwen_resized_size(450, 448) == tm.QWEN_CROP_RESIZED == (448, 448)
    assert tm.qwen_resized_size(1280, 720) == (728, 392)  # never the size the graph shows


def test_protocol_replies_parse_to_the_documented_boxes() -> None:
    localize, refine, zoom_again, last_refine = tm.PROTOCOL_REPLIES["internvl3"]
    assert parse_boxes(localize)[0] == tm.LOCALIZE_BOX
    assert parse_boxes(zoom_again)[0] == tm.ZOOM_AGAIN_BOX
    assert refine == last_refine == tm.REFINE_REPLY
    assert parse_choice(refine, LETTERED, rechecked=True) == tm.PROTOCOL_ANSWER
    assert parse_confidence(refine) == pytest.approx(tm.PROTOCOL_CONFIDENCE)
    assert parse_choice(localize, LETTERED) == tm.PROTOCOL_INITIAL_ANSWER

    qwen_localize, _, qwen_zoom_again, _ = tm.PROTOCOL_REPLIES["qwen2_5_vl"]
    width, height = tm.QWEN_PROTOCOL_RESIZED
    assert parse_boxes(qwen_localize)[0] == tm.QWEN_LOCALIZE_BOX
    assert (
        pytest.approx((0.6 * width, 0.6 * height, 0.7 * width, 0.7 * height))
        == tm.QWEN_LOCALIZE_BOX
    )
    crop_width, crop_height = tm.QWEN_CROP_RESIZED
    assert parse_boxes(qwen_zoom_again)[0] == tm.QWEN_ZOOM_AGAIN_BOX
    assert (
        pytest.approx(
            (0.25 * crop_width, 0.25 * crop_height, 0.75 * crop_width, 0.75 * crop_height)
        )
        == tm.QWEN_ZOOM_AGAIN_BOX
    )

    qwen3_localize, _, qwen3_zoom_again, _ = tm.PROTOCOL_REPLIES["qwen3_vl"]
    assert parse_boxes(qwen3_localize)[0] == tm.QWEN3_LOCALIZE_BOX == (600, 600, 700, 700)
    assert parse_boxes(qwen3_zoom_again)[0] == tm.QWEN3_ZOOM_AGAIN_BOX == (250, 250, 750, 750)
    assert parse_choice(tm.PROTOCOL_BASELINE_REPLY["qwen3_vl"] or "", LETTERED) == "B"


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_protocol_requests_are_what_the_graph_sends(family: tm.TinyFamily) -> None:
    requests = tm.protocol_requests(family, tm.protocol_image_png((1280, 720), "requests"))
    replies = tm.PROTOCOL_REPLIES[family]

    assert [sum(len(images_in(m)) for m in request) for request in requests] == [1, 2, 2, 3]
    localize, refine_1, zoom_again, refine_2 = (texts_in(request[-1]) for request in requests)
    assert localize == localize_prompt(tm.PROTOCOL_QUESTION, LETTERED, "paper")
    assert refine_1 == refine_prompt(tm.PROTOCOL_QUESTION, LETTERED, "B")
    assert zoom_again == zoom_again_prompt(LETTERED, "paper")
    assert refine_2 == refine_prompt(tm.PROTOCOL_QUESTION, LETTERED, "A")
    # Each request extends the previous one by the model's reply and a user turn.
    for earlier, later, reply in zip(requests, requests[1:], replies, strict=False):
        assert later[: len(earlier)] == earlier
        assert later[len(earlier)].content == reply


def test_assistant_labels_mark_the_replies_and_their_end_tokens() -> None:
    tokenizer = tm.build_tiny_tokenizer()
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": tm.LOCALIZE_REPLY}]},
        {"role": "user", "content": [{"type": "text", "text": "Again."}]},
        {"role": "assistant", "content": [{"type": "text", "text": tm.REFINE_REPLY}]},
    ]
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    import torch

    input_ids = torch.tensor([ids])
    labels = tm.assistant_labels(input_ids, tokenizer)
    marked = labels[labels != -100].tolist()
    assert tokenizer.decode(marked) == f"{tm.LOCALIZE_REPLY}<|im_end|>{tm.REFINE_REPLY}<|im_end|>"
    windows = tm.reply_windows(input_ids, labels, window=16)
    assert len(windows) == 2
    assert all(window[0, -1] == tokenizer.convert_tokens_to_ids("<|im_end|>") for window in windows)


def test_learned_merges_are_deterministic_and_keep_the_text() -> None:
    """The trained Qwen3-VL's tokenizer: merges from the conversations' text, the most frequent
    pair first; the same texts give the same merges, and text round-trips in fewer tokens."""
    from zoom_refine.testing.tiny_parts import learn_merges
    from zoom_refine.testing.tiny_qwen import build_tiny_qwen_tokenizer

    texts = ["Rechecked Answer: A", "Rechecked Answer: B", "Bounding box: [600, 600, 700, 700]"]
    plain = build_tiny_qwen_tokenizer()
    merges = learn_merges(plain, texts, 40)
    assert merges == learn_merges(plain, list(texts), 40) and len(merges) <= 40
    assert merges[0] in {("Ġ", "A"), ("e", "c"), ("Ġ", "6")}  # among the most frequent pairs
    merged = build_tiny_qwen_tokenizer(merges=merges)
    for text in [*texts, "Confidence: 0.9 (never seen)"]:
        ids = merged(text)["input_ids"]
        assert merged.decode(ids) == text
    assert len(merged(texts[0])["input_ids"]) < len(plain(texts[0])["input_ids"]) // 3
    specials = ["<|endoftext|>", "<|im_end|>", "<|image_pad|>"]
    assert merged.convert_tokens_to_ids(specials) == plain.convert_tokens_to_ids(specials)


# --- the cache: keys and building once ---------------------------------------------------------

TESTING = Path(tm.__file__).parent


def imports_of(name: str) -> set[str]:
    """The `zoom_refine.testing` modules that module `name` imports (by its source)."""
    found = set()
    for node in ast.walk(ast.parse((TESTING / f"{name}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "zoom_refine.testing":
            found |= {alias.name for alias in node.names if (TESTING / f"{alias.name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "zoom_refine.testing."
        ):
            found.add(str(node.module).rsplit(".", 1)[1])
    return found


def recipe_closure(start: str) -> set[str]:
    """`start` and every testing module it reaches by imports, but the fakes (which only record
    the conversations, whose text the key hashes)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen and name != "fakes":
            seen.add(name)
            todo += imports_of(name)
    return seen


UNHASHED = {"model_cache", "fakes", "protocol_families"}
"""Never hashed as files: the cache itself, the fakes (they only record the conversations, whose
text the key hashes) and the family tables (each family's own entry is hashed instead)."""


def hashed_closure(*starts: str) -> set[str]:
    """The testing modules `starts` reach by imports, but the unhashed ones."""
    return set().union(*(recipe_closure(start) for start in starts)) - UNHASHED


def module_names(modules: Any) -> set[str]:
    return {module.__name__.rsplit(".", 1)[1] for module in modules}


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_a_familys_key_hashes_every_module_that_builds_or_trains_it(family: tm.TinyFamily) -> None:
    own = module_names(tm.FAMILY_RECIPE_MODULES[family])
    names = module_names(tm.recipe_modules(family))
    assert names == hashed_closure(*own, *module_names(tm.SHARED_RECIPE_MODULES))
    others = set().union(*(module_names(m) for f, m in tm.FAMILY_RECIPE_MODULES.items())) - names
    assert not names & (UNHASHED | others | {"vllm_env", "tool_models", "tiny_internvl35"})
    assert {"tiny_parts", "protocol", "protocol_training"} <= names


def test_family_modules_and_tables_keep_families_apart() -> None:
    assert module_names(tm.recipe_modules("internvl3")).isdisjoint({"tiny_qwen", "tiny_qwen3"})
    assert "tiny_qwen3" not in module_names(tm.recipe_modules("qwen2_5_vl"))
    assert {"tiny_qwen", "tiny_qwen3"} <= module_names(tm.recipe_modules("qwen3_vl"))
    # The family tables are data only: every build-shaping value is in some family's entry.
    tree = ast.parse((TESTING / "protocol_families.py").read_text())
    assert not [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)]


def test_a_change_to_one_familys_entry_retrains_that_family_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = {family: tm.protocol_cache_key(family) for family in ("internvl3", "qwen3_vl")}
    entries = {family: tm.family_entry(family) for family in tm.FAMILIES}
    monkeypatch.setitem(tm.PROTOCOL_SETTINGS, "qwen3_vl", {"model_family": "qwen3_vl"})
    monkeypatch.setitem(tm.PROTOCOL_BASELINE_REPLY, "qwen3_vl", "Answer: C")
    assert [tm.family_entry(family) == entries[family] for family in tm.FAMILIES] == [
        True,
        True,
        False,
    ]
    # A new last reply: in the conversations and the entry of qwen3_vl, in no other key.
    changed = (*tm.PROTOCOL_REPLIES["qwen3_vl"][:3], "Rechecked Answer: C\nConfidence: 0.8")
    monkeypatch.setitem(tm.PROTOCOL_REPLIES, "qwen3_vl", changed)
    assert tm.protocol_cache_key("internvl3") == keys["internvl3"]
    assert tm.protocol_cache_key("qwen3_vl") != keys["qwen3_vl"]


def test_tool_model_keys_hash_their_own_recipe_modules() -> None:
    from zoom_refine.testing import tool_models

    for family, recipe in tool_models.TOOL_RECIPES.items():
        names = module_names(tool_models.tool_recipe_modules(family))
        shared = module_names(tm.SHARED_RECIPE_MODULES)
        assert names == hashed_closure(*module_names(recipe.modules), *shared) | {"tool_models"}
    assert "tiny_qwen3" not in module_names(tool_models.TOOL_RECIPE_MODULES)


def test_a_recipe_digest_follows_its_sources(tmp_path: Path) -> None:
    source = tmp_path / "recipe.py"
    source.write_text("WIDTH = 64\n")
    module = types.ModuleType("recipe")
    module.__file__ = str(source)
    first = tm.recipe_digest([module], "internvl3", [])
    assert tm.recipe_digest([module], "internvl3", []) == first
    assert tm.recipe_digest([module], "qwen2_5_vl", []) != first
    source.write_text("WIDTH = 65\n")
    assert tm.recipe_digest([module], "internvl3", []) != first


def test_build_once_builds_once_for_concurrent_callers(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(scratch: Path) -> Path:
        builds.append(scratch)
        time.sleep(0.3)  # long enough for the second caller to reach the lock
        out = scratch / "built"
        out.mkdir()
        (out / "done.json").write_text("{}")
        return out

    final = tmp_path / "model-0123"
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda _: tm.build_once(final, "done.json", build), range(2)))
    assert found == [final, final] and len(builds) == 1
    assert (final / "done.json").is_file() and not list(tmp_path.glob(".tmp-*"))
    assert tm.build_once(final, "done.json", build) == final and len(builds) == 1


def test_an_interrupted_build_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    def build(scratch: Path) -> Path:
        (scratch / "built").mkdir()
        (scratch / "built" / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tm.build_once(tmp_path / "model-0123", "done.json", build)
    assert not (tmp_path / "model-0123").exists() and not list(tmp_path.glob(".tmp-*"))


# --- the tiny random Qwen2.5-VL -----------------------------------------------------------------


@pytest.mark.slow
def test_tiny_qwen_loads_with_the_auto_classes(tiny_qwen_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen_path)
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen_path)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert processor.image_processor.size.longest_edge == tm.QWEN_MAX_PIXELS
    assert sum(p.numel() for p in model.parameters()) < 500_000

    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.new("RGB", (1500, 900))},
                {"type": "text", "text": "Hi"},
            ],
        }
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>" in text
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    inputs = processor.apply_chat_template(
        conversation,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    # image_grid_thw = (t, h, w) in 14-px patches: the resized input is (w * 14, h * 14).
    (t, h, w) = inputs["image_grid_thw"][0].tolist()
    assert (t, w * 14, h * 14) == (1, *tm.qwen_resized_size(1500, 900))
    image_tokens = inputs["input_ids"][0].tolist().count(model.config.image_token_id)
    assert image_tokens == (h * w) // 4 == 375


@pytest.mark.slow
@pytest.mark.parametrize("max_patches", [None, 12])
def test_local_backend_runs_tiny_qwen(tiny_qwen_path: Path, max_patches: int | None) -> None:
    """max_patches is InternVL's knob: Qwen's processor has none, and the backend leaves it out."""
    from langchain_core.messages import HumanMessage

    from zoom_refine.agent.local.model import LocalVisionChatModel
    from zoom_refine.tools.encoding import image_content_block

    model = LocalVisionChatModel(
        model_path=str(tiny_qwen_path), max_new_tokens=4, max_patches=max_patches
    )
    image = tm.protocol_image((1500, 900), "local")
    reply = model.invoke(
        [HumanMessage(content=[image_content_block(image), {"type": "text", "text": "Hi"}])]
    )
    meta = reply.response_metadata
    assert isinstance(reply.content, str)
    assert 1 <= meta["generated_tokens"] <= 4
    # The one `<|image_pad|>` placeholder becomes 375 tokens (700 x 420, one per 28 x 28 block).
    processor = model.load().processor
    placeholder = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(placeholder, add_generation_prompt=True, tokenize=False)
    text_tokens = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert meta["prompt_tokens"] == text_tokens - 1 + 375


# --- the protocol-trained models ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_trained_checkpoints_are_cached_by_recipe(family: tm.TinyFamily) -> None:
    path = tm.trained_protocol_model(family)
    key = tm.protocol_cache_key(family)
    assert path == tm.cache_root() / f"{family}-{key[:16]}"
    report = tm.read_training_report(path)
    assert report["cache_key"] == key
    assert report["final_loss"] < tm.TRAIN_TARGET_LOSS
    assert tm.trained_protocol_model(family) == path  # a hit: no training


@pytest.mark.slow
@pytest.mark.parametrize("family", WINDOWED)
def test_trained_reply_depends_only_on_its_window(family: tm.TinyFamily) -> None:
    """Sliding-window attention really applies (transformers warns that Qwen2.5-VL's sdpa path
    does not implement it; the mask does): the logits of the last reply are the same in the
    whole 4-turn conversation, images included, and in its text window alone."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from zoom_refine.agent.local.model import to_hf_conversation

    path = tm.trained_protocol_model(family)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    png = tm.protocol_image_png((1000, 1300), "window")
    conversation = to_hf_conversation(tm.protocol_conversation(family, png))
    max_patches = tm.protocol_max_patches(family)
    inputs = tm.encode(processor, conversation, generation=False, max_patches=max_patches)
    labels = tm.assistant_labels(inputs["input_ids"], processor.tokenizer)
    window = tm.reply_windows(inputs["input_ids"], labels, tm.PROTOCOL_WINDOW)[-1]
    end = int((labels[0] != -100).nonzero().max()) + 1  # the window ends where the reply does
    with torch.inference_mode():
        full = model(**inputs).logits[0, end - window.shape[1] : end]
        alone = model(input_ids=window[:1]).logits[0]
    reply = window[1] != -100
    # Equal up to float32 rounding (the kernels sum in another order over 3,000 vs 140 keys);
    # without the window the difference would be of order 1.
    assert torch.allclose(full[reply], alone[reply], atol=5e-3)
    assert torch.equal(full[reply].argmax(-1), alone[reply].argmax(-1))


def fresh_copy(path: Path, tmp_path: Path) -> Path:
    """The checkpoint under a new path: a backend (and prefix cache) of its own for this test."""
    return Path(shutil.copytree(path, tmp_path / path.name))


def run_graph(
    family: tm.TinyFamily, model_path: Path, image: Path, *, zoom_again: bool
) -> dict[str, Any]:
    context = tm.protocol_context(family, f"hf:{model_path}", zoom_again=zoom_again)
    result: dict[str, Any] = build_graph().invoke(
        tm.protocol_inputs(image),
        context=context,
        config={"recursion_limit": context.recursion_limit},
    )
    return result


def assert_follows_the_protocol(
    result: dict[str, Any], family: tm.TinyFamily, *, zoom_again: bool
) -> None:
    """The run took the protocol's steps with the trained replies verbatim, answered B then A
    with confidence 0.9, and stopped for the reason zooming again (or not) gives."""
    nodes = ["localize", "refine"] * (2 if zoom_again else 1)
    assert [step["node"] for step in result["steps"]] == nodes
    assert [step["raw"] for step in result["steps"]] == list(tm.PROTOCOL_REPLIES[family])[
        : len(nodes)
    ]
    assert result["initial_answer"] == "B" and result["answer"] == "A"
    assert result["confidence"] == pytest.approx(0.9)
    assert result["stop_reason"] == ("max_hops" if zoom_again else "confident")


@pytest.fixture
def internvl_scene(tmp_path: Path) -> Path:
    """3000 x 2000, never trained on: the first view is 2048 x 1365 (3 tiles at max_patches 2)."""
    path = tmp_path / "scene.png"
    tm.protocol_image((3000, 2000), "graph-internvl").save(path)
    return path


@pytest.mark.slow
def test_trained_internvl_reaches_refine(
    trained_internvl_path: Path, internvl_scene: Path, tmp_path: Path
) -> None:
    result = run_graph(
        "internvl3", fresh_copy(trained_internvl_path, tmp_path), internvl_scene, zoom_again=False
    )

    assert_follows_the_protocol(result, "internvl3", zoom_again=False)
    assert result["steps"][0]["box"] == [0.6, 0.6, 0.7, 0.7]
    assert result["steps"][0]["box_frame"] == "norm1"
    # [0.6, 0.7] of 3000 x 2000 = [1800, 1200, 2100, 1400]; padded by 300 / 200 px.
    crop = expected_crop(
        fraction_box(tm.LOCALIZE_BOX, (0, 0, 3000, 2000)), (0, 0, 3000, 2000), (3000, 2000)
    )
    assert crop == [1500, 1000, 2400, 1600]
    # Each view is made at the processor's tile canvas (max_patches 2): 2×1 tiles of 448 px.
    assert result["views"] == [
        {"id": "img0", "box": [0, 0, 3000, 2000], "hop": 0, "size": [896, 448]},
        {"id": "img1", "box": crop, "hop": 1, "size": [896, 448]},
    ]
    assert result["usage"]["model_calls"] == 2


@pytest.mark.slow
def test_trained_internvl_zooms_again_while_unsure(
    trained_internvl_path: Path, internvl_scene: Path, tmp_path: Path
) -> None:
    result = run_graph(
        "internvl3", fresh_copy(trained_internvl_path, tmp_path), internvl_scene, zoom_again=True
    )

    assert_follows_the_protocol(result, "internvl3", zoom_again=True)
    first = (1500, 1000, 2400, 1600)
    # [0.25, 0.75] of the 900 x 600 crop = [1725, 1150, 2175, 1450]; padded by 90 / 60 px
    # (0.1 of the crop's sides) = 630 x 420, grown to 448 px high around its centre.
    second = expected_crop(fraction_box(tm.ZOOM_AGAIN_BOX, first), first, (3000, 2000))
    assert second == [1635, 1076, 2265, 1524]
    assert [view["box"] for view in result["views"]] == [[0, 0, 3000, 2000], list(first), second]
    assert [view["hop"] for view in result["views"]] == [0, 1, 2]


@pytest.fixture
def qwen_scene(tmp_path: Path) -> Path:
    """1500 x 900 (5:3), new content: shown as is, resized by the processor to 700 x 420."""
    path = tmp_path / "scene.png"
    tm.protocol_image((1500, 900), "graph-qwen").save(path)
    return path


# The Qwen crop, mapped from the 700 x 420 resized frame: 0.6-0.7 of 1500 x 900 =
# [900, 540, 1050, 630], padded by 150 / 90 px = 450 x 270, grown to 448 px high.
QWEN_FIRST_CROP = [750, 361, 1200, 809]
# Then 0.25-0.75 of that crop (resized to 448 x 448), padded by 0.1 of its sides, grown to 448.
QWEN_SECOND_CROP = [751, 361, 1199, 809]


@pytest.mark.slow
def test_trained_qwen_reaches_refine(
    trained_qwen_path: Path, qwen_scene: Path, tmp_path: Path
) -> None:
    result = run_graph(
        "qwen2_5_vl", fresh_copy(trained_qwen_path, tmp_path), qwen_scene, zoom_again=False
    )

    assert_follows_the_protocol(result, "qwen2_5_vl", zoom_again=False)
    assert result["steps"][0]["box"] == list(tm.QWEN_LOCALIZE_BOX)
    assert result["steps"][0]["box_frame"] == "pixel"
    # The view is made at the processor's resized input itself (its pixel frame): 700 x 420.
    assert result["views"][0] == {
        "id": "img0",
        "box": [0, 0, 1500, 900],
        "hop": 0,
        "size": [700, 420],
    }
    assert (
        expected_crop(
            fraction_box(tm.LOCALIZE_BOX, (0, 0, 1500, 900)), (0, 0, 1500, 900), (1500, 900)
        )
        == QWEN_FIRST_CROP
    )
    # frame mapping: see issue 3. A `pixel` box is read in the frame the model saw: the
    # processor's resized input (700 x 420), which is now the view itself.
    assert result["views"][1] == {
        "id": "img1",
        "box": QWEN_FIRST_CROP,
        "hop": 1,
        "size": [448, 448],  # the 450 x 448 crop at its resized input (multiples of 28)
    }


@pytest.mark.slow
def test_trained_qwen_zooms_again_while_unsure(
    trained_qwen_path: Path, qwen_scene: Path, tmp_path: Path
) -> None:
    result = run_graph(
        "qwen2_5_vl", fresh_copy(trained_qwen_path, tmp_path), qwen_scene, zoom_again=True
    )

    assert_follows_the_protocol(result, "qwen2_5_vl", zoom_again=True)
    assert result["steps"][2]["box"] == list(tm.QWEN_ZOOM_AGAIN_BOX)
    x1, y1, x2, y2 = QWEN_FIRST_CROP
    first = (x1, y1, x2, y2)
    second = expected_crop(fraction_box(tm.ZOOM_AGAIN_BOX, first), first, (1500, 900))
    assert second == QWEN_SECOND_CROP
    # frame mapping: see issue 3 (the second box is in the 448 x 448 resized crop's pixels).
    assert [view["box"] for view in result["views"]] == [
        [0, 0, 1500, 900],
        QWEN_FIRST_CROP,
        QWEN_SECOND_CROP,
    ]


@pytest.mark.slow
def test_trained_internvl_rerun_with_a_warm_prefix_cache(
    trained_internvl_path: Path, internvl_scene: Path, tmp_path: Path
) -> None:
    """A second run on the same image starts from the first run's cache, cut back to the
    shared prefix. The trained models use sliding-window attention (as Gemma 3 does): such a
    cache cannot be cut back, so the backend refuses it and prefills in full."""
    model_path = fresh_copy(trained_internvl_path, tmp_path)
    first = run_graph("internvl3", model_path, internvl_scene, zoom_again=False)
    again = run_graph("internvl3", model_path, internvl_scene, zoom_again=True)
    assert [step["raw"] for step in again["steps"]][:2] == [step["raw"] for step in first["steps"]]
