"""Tests for zoom_refine.tools.images: safe loading of any user image into one RGB image.

Every image is built here with Pillow; expected pixel values are computed by hand.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoom_refine.tools.errors import ImageLoadError, ImageTooLargeError, ZoomRefineError
from zoom_refine.tools.images import (
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    decode_image_bytes,
    load_image,
    to_rgb,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


# --- helpers -------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def write(path: Path, image: Image.Image, fmt: str, **params: object) -> Path:
    path.write_bytes(encode(image, fmt, **params))
    return path


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    array = np.asarray(image)
    return [tuple(int(v) for v in px) for px in array.reshape(-1, array.shape[-1])]


def close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def png_with_declared_size(width: int, height: int) -> bytes:
    """A real 8×8 PNG whose IHDR is patched to declare `width`×`height` (CRC fixed up)."""
    data = bytearray(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    assert data[12:16] == b"IHDR"  # 8-byte signature, 4-byte length, then the chunk type
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF  # over type + 13 data bytes
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def exif_jpeg(orientation: int) -> bytes:
    """A 40×20 stored JPEG: red 10×10 block in the stored top-left corner, the rest blue."""
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def assert_exact_load_error(error: pytest.ExceptionInfo[ImageLoadError]) -> None:
    """A load failure that is *not* the too-large subclass."""
    assert type(error.value) is ImageLoadError


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.reliability(
    "Images",
    "a path that does not exist",
    "ImageLoadError: 'image not found: PATH (check the path)'",
)
def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cat.png"
    with pytest.raises(ImageLoadError) as error:
        load_image(missing)
    assert str(missing) in str(error.value)
    assert "not found" in str(error.value)
    assert isinstance(error.value, ZoomRefineError)


def test_missing_path_as_str(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.jpg")
    with pytest.raises(ImageLoadError, match=r"absent\.jpg"):
        load_image(missing)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as error:
        load_image(tmp_path)
    assert_exact_load_error(error)
    assert "not a file" in str(error.value)
    assert str(tmp_path) in str(error.value)


@pytest.mark.reliability(
    "Images", "0-byte file", "ImageLoadError: 'image is empty (0 bytes): PATH'"
)
def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError) as error:
        load_image(empty)
    assert_exact_load_error(error)
    assert "empty" in str(error.value)
    assert str(empty) in str(error.value)


def test_zero_bytes_input() -> None:
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")


@pytest.mark.reliability(
    "Images",
    "text file named .jpg",
    "ImageLoadError: 'not a readable image: PATH (unknown format)'",
)
def test_text_file_named_jpg(tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a JPEG, just some text\n" * 10)
    with pytest.raises(ImageLoadError) as error:
        load_image(fake)
    assert_exact_load_error(error)
    assert "not a readable image" in str(error.value)
    assert str(fake) in str(error.value)


@pytest.mark.reliability(
    "Images", "truncated JPEG", "ImageLoadError naming the file; the whole file loads"
)
def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    whole = encode(noise, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageLoadError) as error:
        load_image(path)
    assert_exact_load_error(error)
    assert str(path) in str(error.value)
    # The same file, whole, loads.
    assert load_image(whole).size == (64, 64)


def test_truncated_png_bytes() -> None:
    whole = encode(Image.new("RGB", (50, 50), GREEN), "PNG")
    with pytest.raises(ImageLoadError):
        load_image(whole[: len(whole) // 2])


# --- pixel limits --------------------------------------------------------------------------------


@pytest.mark.reliability(
    "Images",
    "PNG declaring 40000×40000 (decompression bomb)",
    "ImageTooLargeError from the header, before any pixel is decoded",
)
def test_header_declaring_40000_squared_is_refused_before_decode(tmp_path: Path) -> None:
    data = png_with_declared_size(40000, 40000)
    assert struct.unpack(">II", data[16:24]) == (40000, 40000)
    assert len(data) < 200  # nothing like 1.6 G pixels of data behind the header
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ImageTooLargeError) as error:
        load_image(path)
    assert str(path) in str(error.value)
    assert "too large" in str(error.value)


def test_declared_size_over_max_pixels_is_refused_by_our_check() -> None:
    # 12000×12000 = 144 M is under Pillow's own bomb limit and under the default, so only our
    # max_pixels check can refuse it; the pixel data is an 8×8 image, so decoding it would
    # fail with a plain ImageLoadError — TooLarge proves the check ran before any decode.
    data = png_with_declared_size(12000, 12000)
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow reads the header, CRC accepted
        assert Image.open(io.BytesIO(data)).size == (12000, 12000)
    with pytest.raises(ImageTooLargeError) as error:
        load_image(data, max_pixels=100_000_000)
    message = str(error.value)
    assert "12000×12000" in message
    assert "144,000,000" in message
    assert "100,000,000" in message


def test_declared_size_under_limit_then_fails_to_decode() -> None:
    data = png_with_declared_size(12000, 12000)
    with pytest.raises(ImageLoadError) as error:
        load_image(data, max_pixels=DEFAULT_MAX_PIXELS)
    assert_exact_load_error(error)


@pytest.mark.parametrize(
    ("size", "max_pixels", "ok"),
    [
        ((100, 100), 10_000, True),  # exactly at the limit
        ((100, 100), 9_999, False),
        ((100, 101), 10_000, False),
        ((1, 5000), 5_000, True),
    ],
)
def test_max_pixels_boundary(size: tuple[int, int], max_pixels: int, ok: bool) -> None:
    data = encode(Image.new("RGB", size, RED), "PNG")
    if ok:
        assert load_image(data, max_pixels=max_pixels).size == size
    else:
        with pytest.raises(ImageTooLargeError):
            load_image(data, max_pixels=max_pixels)


def test_limit_is_checked_even_when_the_bytes_were_decoded_before() -> None:
    data = encode(Image.new("RGB", (30, 30), BLUE), "PNG")
    assert load_image(data).size == (30, 30)  # decoded (and cached) under the default limit
    with pytest.raises(ImageTooLargeError):
        load_image(data, max_pixels=899)


def test_raising_max_pixels_above_pillows_own_limit_is_honoured() -> None:
    # 15000×15000 = 225 M pixels is over Pillow's built-in bomb limit (2 × 89.5 M); a user who
    # raises max_pixels to allow it must not be refused as "too large" (the message tells them
    # to do exactly that). The data is only 8×8, so the honest outcome is a decode error.
    data = png_with_declared_size(15000, 15000)
    with pytest.raises(ImageLoadError) as error:
        load_image(data, max_pixels=300_000_000)
    assert_exact_load_error(error)
    with pytest.raises(ImageTooLargeError):
        load_image(data, max_pixels=200_000_000)


# --- modes ---------------------------------------------------------------------------------------


@pytest.mark.reliability(
    "Images",
    "palette PNG with transparency",
    "RGB, transparent pixels white, the rest keep their colour",
)
def test_palette_with_transparency_becomes_white_where_transparent(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 255, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 blue, 1 red
    image.paste(1, (2, 0, 4, 2))  # right half red
    path = write(tmp_path / "p.png", image, "PNG", transparency=0)
    loaded = load_image(path).image
    assert loaded.mode == "RGB"
    row = [loaded.getpixel((x, 0)) for x in range(4)]
    assert row == [WHITE, WHITE, RED, RED]  # blue index was transparent: not blue, not black


def test_palette_gif_with_transparency() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 255, 255, 0, 0] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    loaded = load_image(encode(image, "GIF", transparency=0)).image
    assert [loaded.getpixel((0, 0)), loaded.getpixel((1, 0))] == [WHITE, RED]


def test_palette_without_transparency_keeps_colours() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 255, 255, 0, 0] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    loaded = load_image(encode(image, "PNG")).image
    assert [loaded.getpixel((0, 0)), loaded.getpixel((1, 0))] == [BLUE, RED]


def test_rgba_composited_on_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 255))  # opaque red
    image.putpixel((1, 0), (0, 0, 255, 0))  # fully transparent blue → white
    image.putpixel((2, 0), (255, 0, 0, 128))  # half red over white
    loaded = load_image(encode(image, "PNG")).image
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == RED
    assert loaded.getpixel((1, 0)) == WHITE
    # 255·(128/255) + 255·(127/255) = 255 for red; 0 + 255·127/255 = 127 for green and blue.
    half = loaded.getpixel((2, 0))
    assert isinstance(half, tuple)
    assert close(half, (255, 127, 127), 1)


def test_la_composited_on_white() -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))  # transparent black → white
    image.putpixel((1, 0), (100, 255))  # opaque grey
    loaded = load_image(encode(image, "PNG")).image
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == (100, 100, 100)


def test_greyscale_with_trns_transparency_is_white_where_transparent() -> None:
    image = Image.new("L", (2, 1), 0)
    image.putpixel((1, 0), 200)
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "L"  # stays L with info["transparency"]
    loaded = load_image(data).image
    assert [loaded.getpixel((0, 0)), loaded.getpixel((1, 0))] == [WHITE, (200, 200, 200)]


def test_rgb_with_trns_transparency_is_white_where_transparent() -> None:
    image = Image.new("RGB", (2, 1), BLACK)
    image.putpixel((1, 0), (200, 10, 10))
    data = encode(image, "PNG", transparency=BLACK)
    loaded = load_image(data).image
    assert [loaded.getpixel((0, 0)), loaded.getpixel((1, 0))] == [WHITE, (200, 10, 10)]


@pytest.mark.reliability("Images", "CMYK JPEG", "converted to RGB with the right colours (±8)")
def test_cmyk_jpeg() -> None:
    image = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # no cyan, full magenta+yellow: red
    image.paste((255, 0, 0, 0), (8, 0, 16, 8))  # full cyan: (0, 255, 255)
    data = encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    loaded = load_image(data).image
    assert loaded.mode == "RGB"
    left, right = loaded.getpixel((2, 4)), loaded.getpixel((13, 4))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert close(left, RED, 8)
    assert close(right, (0, 255, 255), 8)


def test_greyscale_l() -> None:
    image = Image.new("L", (2, 1), 10)
    image.putpixel((1, 0), 250)
    loaded = load_image(encode(image, "PNG")).image
    assert loaded.mode == "RGB"
    assert [loaded.getpixel((0, 0)), loaded.getpixel((1, 0))] == [(10, 10, 10), (250, 250, 250)]


@pytest.mark.reliability(
    "Images", "16-bit PNG", "RGB, the used range stretched to 0–255 (not clipped)"
)
def test_16_bit_png_stretches_used_range() -> None:
    values = np.array([[1000, 2000], [3000, 40000]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16-bit on disk
    loaded = load_image(data).image
    assert loaded.mode == "RGB"
    # (v - 1000) · 255 / 39000: 0, 6.5, 13.1, 255 — not clipped to 255 everywhere.
    got = [loaded.getpixel((x, y))[0] for y in range(2) for x in range(2)]  # type: ignore[index]
    assert got[0] == 0
    assert got[3] == 255
    assert 6 <= got[1] <= 7
    assert got[2] == 13
    assert all(len(set(loaded.getpixel((x, y)))) == 1 for y in range(2) for x in range(2))  # type: ignore[arg-type]


def test_16_bit_constant_image_does_not_divide_by_zero() -> None:
    data = encode(Image.fromarray(np.full((3, 3), 5000, dtype=np.uint16)), "PNG")
    loaded = load_image(data).image
    assert loaded.mode == "RGB"
    assert loaded.getpixel((1, 1)) == BLACK  # (v - low) = 0 everywhere


def test_32_bit_integer_and_float_modes_via_to_rgb() -> None:
    integer = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32))
    assert integer.mode == "I"
    converted = to_rgb(integer)
    assert converted.mode == "RGB"
    assert [converted.getpixel((0, 0)), converted.getpixel((1, 0))] == [BLACK, WHITE]
    floating = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert floating.mode == "F"
    converted = to_rgb(floating)
    assert [converted.getpixel((x, 0))[0] for x in range(3)] == [0, 127, 255]  # type: ignore[index]


def test_one_bit() -> None:
    image = Image.new("1", (3, 1), 0)
    image.putpixel((1, 0), 1)
    loaded = load_image(encode(image, "PNG")).image
    assert loaded.mode == "RGB"
    assert [loaded.getpixel((x, 0)) for x in range(3)] == [BLACK, WHITE, BLACK]


def test_to_rgb_returns_an_rgb_image_unchanged() -> None:
    image = Image.new("RGB", (2, 2), GREEN)
    assert to_rgb(image) is image


# --- orientation, animation, extreme sizes -------------------------------------------------------


@pytest.mark.reliability(
    "Images",
    "EXIF orientation 6 JPEG",
    "rotated as displayed: size swapped, stored top-left at the top-right",
)
def test_exif_orientation_6_rotates_clockwise() -> None:
    loaded = load_image(exif_jpeg(6))
    assert loaded.size == (20, 40)  # width and height swapped
    image = loaded.image
    # 90° clockwise: stored (x, y) → shown (H-1-y, x); the stored top-left goes to the top-right.
    top_right, top_left = image.getpixel((15, 4)), image.getpixel((4, 4))
    bottom_left = image.getpixel((4, 35))
    assert isinstance(top_right, tuple)
    assert isinstance(top_left, tuple)
    assert isinstance(bottom_left, tuple)
    assert close(top_right, RED, 30)
    assert close(top_left, BLUE, 30)
    assert close(bottom_left, BLUE, 30)


@pytest.mark.reliability(
    "Images", "EXIF orientation 8 JPEG", "rotated as displayed: stored top-left at the bottom-left"
)
def test_exif_orientation_8_rotates_counter_clockwise() -> None:
    loaded = load_image(exif_jpeg(8))
    assert loaded.size == (20, 40)
    image = loaded.image
    # 90° counter-clockwise: stored (x, y) → shown (y, W-1-x); the top-left goes to bottom-left.
    bottom_left, top_right = image.getpixel((4, 35)), image.getpixel((15, 4))
    assert isinstance(bottom_left, tuple)
    assert isinstance(top_right, tuple)
    assert close(bottom_left, RED, 30)
    assert close(top_right, BLUE, 30)


def test_exif_orientation_1_is_unchanged() -> None:
    loaded = load_image(exif_jpeg(1))
    assert loaded.size == (40, 20)
    top_left = loaded.image.getpixel((4, 4))
    assert isinstance(top_left, tuple)
    assert close(top_left, RED, 30)


@pytest.mark.reliability("Images", "animated GIF", "the first frame, as RGB")
def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    loaded = load_image(path)
    assert loaded.size == (6, 4)
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((3, 2)) == RED


@pytest.mark.reliability("Images", "1×1 PNG", "loads as a 1×1 RGB image")
def test_one_by_one(tmp_path: Path) -> None:
    path = write(tmp_path / "dot.png", Image.new("RGB", (1, 1), GREEN), "PNG")
    loaded = load_image(path)
    assert loaded.size == (1, 1)
    assert loaded.image.getpixel((0, 0)) == GREEN


@pytest.mark.reliability("Images", "1×5000 and 5000×1 PNG", "load as RGB, pixels in place")
@pytest.mark.parametrize("size", [(1, 5000), (5000, 1)], ids=["1x5000", "5000x1"])
def test_one_pixel_wide_strips(size: tuple[int, int]) -> None:
    image = Image.new("L", size, 0)
    image.putpixel((size[0] - 1, size[1] - 1), 255)
    loaded = load_image(encode(image, "PNG"))
    assert loaded.size == size
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((size[0] - 1, size[1] - 1)) == WHITE
    assert loaded.image.getpixel((0, 0)) == BLACK


# --- hashes and names ----------------------------------------------------------------------------


def test_bytes_and_path_give_the_same_sha256(tmp_path: Path) -> None:
    image = Image.new("RGB", (7, 5), (12, 34, 56))
    path = write(tmp_path / "img.png", image, "PNG")
    file_bytes = path.read_bytes()
    from_path = load_image(path)
    from_bytes = load_image(file_bytes)
    expected = hashlib.sha256(file_bytes).hexdigest()
    assert from_path.sha256 == expected
    assert from_bytes.sha256 == expected
    assert from_path.name == str(path)
    assert from_bytes.name == f"<{len(file_bytes)} bytes>"
    assert np.array_equal(np.asarray(from_path.image), np.asarray(from_bytes.image))


def test_different_bytes_give_different_hashes() -> None:
    first = load_image(encode(Image.new("RGB", (2, 2), RED), "PNG"))
    second = load_image(encode(Image.new("RGB", (2, 2), BLUE), "PNG"))
    assert first.sha256 != second.sha256
    assert first.image.getpixel((0, 0)) == RED
    assert second.image.getpixel((0, 0)) == BLUE


def test_decode_image_bytes_directly() -> None:
    data = encode(Image.new("RGB", (3, 2), RED), "BMP")
    loaded = decode_image_bytes(data, name="mine", max_pixels=6)
    assert isinstance(loaded, LoadedImage)
    assert loaded.name == "mine"
    assert loaded.size == (3, 2)
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(ImageTooLargeError, match="mine"):
        decode_image_bytes(data, name="mine", max_pixels=5)


def _every_mode_sample() -> list[tuple[str, bytes]]:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    samples: list[tuple[str, bytes]] = [
        ("rgb-png", encode(Image.new("RGB", (4, 4), RED), "PNG")),
        ("rgba-png", encode(Image.new("RGBA", (4, 4), (1, 2, 3, 4)), "PNG")),
        ("la-png", encode(Image.new("LA", (4, 4), (9, 9)), "PNG")),
        ("l-png", encode(Image.new("L", (4, 4), 9), "PNG")),
        ("1-png", encode(Image.new("1", (4, 4), 1), "PNG")),
        ("p-png", encode(palette, "PNG")),
        ("p-trns", encode(palette, "PNG", transparency=0)),
        ("i16-png", encode(Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4)), "PNG")),
        ("cmyk-jpeg", encode(Image.new("CMYK", (4, 4), (1, 2, 3, 4)), "JPEG")),
        ("l-jpeg", encode(Image.new("L", (4, 4), 9), "JPEG")),
        ("rgb-webp", encode(Image.new("RGB", (4, 4), RED), "WEBP")),
        ("rgba-webp", encode(Image.new("RGBA", (4, 4), (1, 2, 3, 4)), "WEBP")),
        ("rgb-tiff", encode(Image.new("RGB", (4, 4), RED), "TIFF")),
        ("cmyk-tiff", encode(Image.new("CMYK", (4, 4), (1, 2, 3, 4)), "TIFF")),
        ("rgb-bmp", encode(Image.new("RGB", (4, 4), RED), "BMP")),
        ("gif", encode(palette, "GIF")),
    ]
    return samples


@pytest.mark.parametrize(("label", "data"), _every_mode_sample(), ids=lambda v: str(v)[:12])
def test_every_loaded_image_is_rgb(label: str, data: bytes) -> None:
    loaded = load_image(data)
    assert loaded.image.mode == "RGB", label
    assert loaded.size == (4, 4)
    assert np.asarray(loaded.image).shape == (4, 4, 3)


# --- official=True: decoded as the official Zoom-Refine code decodes (the `official` preset) ----


def test_official_decoding_drops_alpha_where_the_default_composites_on_white() -> None:
    rgba = Image.new("RGBA", (4, 2), (200, 40, 10, 0))  # fully transparent
    data = encode(rgba, "PNG")
    assert load_image(data).image.getpixel((0, 0)) == WHITE
    assert load_image(data, official=True).image.getpixel((0, 0)) == (200, 40, 10)


def test_official_decoding_clips_16_bit_grey_where_the_default_rescales() -> None:
    grey = Image.fromarray(np.array([[0, 300, 60000]], dtype=np.uint16))
    assert grey.mode == "I;16"
    data = encode(grey, "PNG")
    assert load_image(data).image.getpixel((1, 0)) == (1, 1, 1)  # 300 of 0..60000 → 0..255
    assert load_image(data, official=True).image.getpixel((1, 0)) == WHITE  # clipped at 255


def test_official_decoding_ignores_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    data = encode(Image.new("RGB", (40, 10), RED), "JPEG", exif=exif.tobytes())
    assert load_image(data).size == (10, 40)
    assert load_image(data, official=True).size == (40, 10)


@pytest.mark.reliability(
    "Images",
    "truncated JPEG under the official preset (official=True)",
    "read as far as its data goes, as the official code does; the default still refuses it",
)
def test_official_decoding_reads_a_truncated_file_and_the_default_still_refuses_it() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = encode(Image.fromarray(noise), "JPEG")  # noise: most bytes are scan data
    cut = whole[: len(whole) * 3 // 5]
    assert load_image(cut, official=True).size == (64, 64)
    with pytest.raises(ImageLoadError):
        load_image(cut)  # the cache keys the two paths apart
    with pytest.raises(ImageLoadError):
        load_image(cut, official=True, max_pixels=100)  # the pixel limit still applies
