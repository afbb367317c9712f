"""The fast image pipeline: decode once, views made at the processor's input size, tiles once.

Checked against the real InternVL3 and Qwen2.5-VL processors of the tiny checkpoints: the fast
path gives the processor images it leaves unresized, its tiles stay within a grey level of the
tiles a fresh, uncached processor makes from the original image, and `exact_preprocessing`
reproduces that processor's tiles exactly. (That is transformers' tiling; agreement with the
official repository's own tiling code is checked by `zoom-refine official verify` against a
checkout of it, and by the golden data recorded from it.)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from dataset_fixtures import photo_like
from langchain_core.messages import HumanMessage
from PIL import Image
from transformers import AutoProcessor

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import internvl_canvas_size, processor_input_size
from zoom_refine.agent.first_look import first_look
from zoom_refine.agent.local.image_cache import CachingImageProcessor
from zoom_refine.agent.local.model import LocalVisionChatModel, to_hf_conversation
from zoom_refine.tools.crop_tool import crop_message_content, make_crop
from zoom_refine.tools.encoding import decode_block_image, image_content_block
from zoom_refine.tools.images import load_image
from zoom_refine.tools.settings import ImageSettings
from zoom_refine.tools.views import downsample

MEAN = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)


@pytest.fixture(scope="module")
def uhd_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "uhd.jpg"
    photo_like((3200, 1800)).save(path, "JPEG", quality=92)
    return path


@pytest.fixture(scope="module")
def internvl(tiny_internvl_path: Path) -> LocalVisionChatModel:
    model = LocalVisionChatModel(model_path=str(tiny_internvl_path), max_patches=12)
    model.load()
    return model


def grey_levels(pixel_values: torch.Tensor) -> np.ndarray:
    return np.asarray(pixel_values.float().numpy() * STD + MEAN) * 255.0


def plain_tiles(model_dir: Path, images: list[Image.Image]) -> Any:
    """Tiles from a fresh, uncached processor handed the images as they are: transformers' own
    chain, which our cached fast path must match (not the official repository's code)."""
    processor = AutoProcessor.from_pretrained(model_dir)
    return processor.image_processor(images=images, max_patches=12, return_tensors="pt")


def tiles_of(model: LocalVisionChatModel, blocks: list[dict[str, Any]]) -> Any:
    """The tiles our local model computes for image blocks, through its own decode + processor."""
    conversation = to_hf_conversation([HumanMessage(content=[*blocks, "What is shown?"])])
    return model._prepare_inputs(model.load(), conversation)


# --- views at the processor's input size ---------------------------------------------------------


@pytest.mark.slow
def test_the_first_view_is_made_at_the_tile_canvas_and_the_processor_keeps_it(
    internvl: LocalVisionChatModel, uhd_jpeg: Path, tiny_internvl_path: Path
) -> None:
    context = ZoomContext(model=internvl)
    look = first_look(uhd_jpeg, context)
    assert look.view.shown_size == (1792, 896)  # 16:9 under 12 tiles: a 4×2 canvas
    assert look.image_block["mime_type"] == "image/bmp"  # in-process: lossless, uncompressed
    ours = tiles_of(internvl, [look.image_block])
    reference = plain_tiles(tiny_internvl_path, [load_image(uhd_jpeg).image])
    assert ours["pixel_values"].shape == reference["pixel_values"].shape == (9, 3, 448, 448)
    # The 8 tiles: made by the processor's own resize, straight from the original: identical.
    assert torch.equal(ours["pixel_values"][:8], reference["pixel_values"][:8])
    # The thumbnail is resized from the view here, from the original there: within a grey level.
    thumbnail = np.abs(
        grey_levels(ours["pixel_values"][8:]) - grey_levels(reference["pixel_values"][8:])
    )
    assert 0.0 < thumbnail.mean() < 1.0


@pytest.mark.slow
def test_exact_preprocessing_gives_the_processors_own_tiles_bit_for_bit(
    internvl: LocalVisionChatModel, uhd_jpeg: Path, tiny_internvl_path: Path
) -> None:
    context = ZoomContext(model=internvl, exact_preprocessing=True)
    look = first_look(uhd_jpeg, context)
    assert look.view.shown_size == (3200, 1800)  # full resolution: the processor resizes it
    original = load_image(uhd_jpeg).image
    crop = make_crop(
        original, [look.view.to_record()], "img0", [0.6, 0.6, 0.7, 0.7], "norm1", context
    )
    assert crop.image.size == (crop.view.box.width, crop.view.box.height)
    ours = tiles_of(internvl, [look.image_block, *crop_message_content(crop, context)[1:]])
    region = original.crop(crop.view.box.as_tuple())
    reference = plain_tiles(tiny_internvl_path, [original, region])
    assert torch.equal(ours["pixel_values"], reference["pixel_values"])


@pytest.mark.slow
def test_crops_are_made_at_their_own_canvas(internvl: LocalVisionChatModel, uhd_jpeg: Path) -> None:
    context = ZoomContext(model=internvl)
    original = load_image(uhd_jpeg).image
    look = first_look(uhd_jpeg, context)
    crop = make_crop(
        original, [look.view.to_record()], "img0", [0.6, 0.6, 0.7, 0.7], "norm1", context
    )
    region = (crop.view.box.width, crop.view.box.height)
    canvas = internvl_canvas_size(region, max_patches=12)
    assert crop.view.shown_size == canvas == crop.image.size
    assert canvas[0] <= region[0] and canvas[1] <= region[1]  # never enlarged


def test_a_canvas_larger_than_the_region_is_left_to_the_processor() -> None:
    class KnowsTheModel(ImageSettings):
        def model_input_size(self, region_size: tuple[int, int]) -> tuple[int, int] | None:
            return internvl_canvas_size(region_size, max_patches=12)

    settings = KnowsTheModel()
    assert settings.shown_size((500, 300)) == (500, 300)  # its canvas (896×448) would enlarge it
    assert settings.shown_size((7680, 4320)) == (1792, 896)
    assert settings.shown_size((20000, 100)) == (2048, 10)  # a 12×1 canvas exceeds view_max_side
    assert ImageSettings().shown_size((7680, 4320)) == (2048, 1152)  # model unknown: fit the side
    assert ImageSettings(exact_preprocessing=True).shown_size((7680, 4320)) == (7680, 4320)


@pytest.mark.parametrize("max_patches", [1, 6, 12, 24, 40])
def test_internvl_sizes_keep_the_tile_grid_of_the_original(
    max_patches: int, tiny_internvl_path: Path
) -> None:
    """Pre-sizing must not change how many tiles the processor cuts: for many shapes, the
    processor's own tile count for the pre-sized image equals that for the original."""
    processor = AutoProcessor.from_pretrained(tiny_internvl_path).image_processor
    rng = np.random.default_rng(max_patches)
    kwargs = {"max_patches": max_patches}
    presized = 0
    for _ in range(300):
        size = (int(rng.integers(200, 12000)), int(rng.integers(200, 12000)))
        target = processor_input_size(
            "internvl", size, max_patches=max_patches, qwen_min_pixels=0, qwen_max_pixels=0
        )
        if target is None:
            continue  # not a stable size: the view is left to the processor
        presized += 1
        original_tiles = processor.get_number_of_image_patches(size[1], size[0], kwargs)
        presized_tiles = processor.get_number_of_image_patches(target[1], target[0], kwargs)
        assert presized_tiles == original_tiles, (size, target)
    assert presized >= 270  # nearly every shape gets a stable canvas: the check is not vacuous


@pytest.mark.slow
def test_qwen_views_are_its_resized_input_so_pixel_boxes_need_no_mapping(
    tiny_qwen_path: Path, uhd_jpeg: Path
) -> None:
    model = LocalVisionChatModel(model_path=str(tiny_qwen_path))
    context = ZoomContext(model=model, max_new_tokens=2)
    model.load()  # as `graphs.calls.resolve_model` does before any view is made
    look = first_look(uhd_jpeg, context)
    width, height = look.view.shown_size
    assert width % 28 == 0 and height % 28 == 0
    reply = model.invoke([HumanMessage(content=[look.image_block, "Where?"])])
    assert reply.response_metadata["image_sizes"] == [[width, height]]  # used as sent


# --- each image decoded and tiled once -------------------------------------------------------------


def test_a_file_is_decoded_once_while_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    photo_like((300, 200), seed=1).save(path)
    first = load_image(path)
    assert load_image(path).image is first.image  # the crop tool's load reuses the decode
    photo_like((300, 200), seed=2).save(path)
    os.utime(path, ns=(1, 1))  # a rewrite: new content, new modification time
    second = load_image(path)
    assert second.image is not first.image and second.sha256 != first.sha256


@pytest.mark.parametrize("image_format", ["bmp", "png"])
def test_lossless_blocks_are_taken_back_undecoded_with_identical_pixels(image_format: str) -> None:
    image = photo_like((320, 180), seed=3)
    block = image_content_block(image, image_format)  # type: ignore[arg-type]
    assert decode_block_image(block["base64"]) is image  # the very pixels, not decoded
    import base64

    decoded = Image.open(io.BytesIO(base64.b64decode(block["base64"]))).convert("RGB")
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_jpeg_blocks_are_not_taken_back() -> None:
    image = photo_like((320, 180), seed=4)
    block = image_content_block(image, "jpeg")
    decoded = decode_block_image(block["base64"])  # lossy: the model must see the JPEG pixels
    assert decoded is not image and not np.array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.slow
def test_the_tile_cache_returns_what_the_processor_computes(tiny_internvl_path: Path) -> None:
    plain = AutoProcessor.from_pretrained(tiny_internvl_path).image_processor
    cached = CachingImageProcessor(
        AutoProcessor.from_pretrained(tiny_internvl_path).image_processor
    )
    view, crop = photo_like((1792, 896), seed=5), photo_like((896, 448), seed=6)
    expected = plain(images=[view, crop], max_patches=12, return_tensors="pt")
    first = cached(images=[view], max_patches=12, return_tensors="pt")
    second = cached(images=[view, crop], max_patches=12, return_tensors="pt")
    assert cached.hits == 1  # the refine call's view came from the cache
    assert torch.equal(second["pixel_values"], expected["pixel_values"])
    assert second["num_patches"].tolist() == expected["num_patches"].tolist() == [9, 3]
    assert torch.equal(first["pixel_values"], expected["pixel_values"][:9])
    other_budget = cached(images=[view], max_patches=2, return_tensors="pt")
    assert other_budget["pixel_values"].shape[0] == 3  # options are part of the key


def test_downsample_is_antialiased_bicubic() -> None:
    image = photo_like((3840, 2160), seed=7)
    fast = np.asarray(downsample(image, (1792, 896)), dtype=np.int16)
    pillow = np.asarray(image.resize((1792, 896), Image.Resampling.BICUBIC), dtype=np.int16)
    assert fast.shape == (896, 1792, 3)
    assert np.abs(fast - pillow).mean() < 1.0  # Pillow's bicubic, within a grey level
    assert downsample(image, image.size) is image
    grey = Image.new("L", (40, 20), 128)
    assert downsample(grey, (20, 10)).mode == "L"  # other modes: Pillow resizes them


def test_the_lru_map_forgets_the_least_recently_used() -> None:
    from zoom_refine.tools.lru import LruMap

    lru: LruMap[str, int] = LruMap(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recently used
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    assert len(lru) == 2


def test_the_context_never_loads_a_model_to_size_a_view(tmp_path: Path) -> None:
    """`ZoomContext` holds settings: asked for the model's input size before the model is
    resolved, it answers None (the view is fitted to `view_max_side`) instead of loading."""
    missing = tmp_path / "no-such-checkpoint"
    for model in (f"hf:{missing}", LocalVisionChatModel(model_path=str(missing))):
        context = ZoomContext(model=model)
        assert context.model_input_size((7680, 4320)) is None
        assert context.shown_size((7680, 4320)) == (2048, 1152)
