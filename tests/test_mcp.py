"""`zoom-refine mcp`: the `crop` and `zoom_refine` tools through the official MCP SDK's clients —
its stdio client against the real command (a subprocess), and its in-process client for the
many refusals (same server object, no process start)."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("mcp")

from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from zoom_refine import InvalidInputError, ZoomContext
from zoom_refine.mcp_server import (
    ServerSettings,
    allowed_path,
    build_server,
    crop_image,
    resolved_roots,
)

RED = (1200, 600, 1400, 800)  # in pixels of the 1600×1000 photo
COMMAND = shutil.which("zoom-refine", path=str(Path(sys.executable).parent)) or "zoom-refine"
SPAWN_TIMEOUT_S = 120


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed folder with a photo, and a folder outside it with a secret photo."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    image = Image.new("RGB", (1600, 1000), (200, 200, 200))
    image.paste((255, 0, 0), RED)
    image.save(allowed / "photo.png")
    image.save(outside / "secret.png")
    return allowed, outside


def image_of(content: Any) -> Image.Image:
    assert content.type == "image"
    return Image.open(io.BytesIO(base64.b64decode(content.data))).convert("RGB")


def run_stdio(args: list[str], session_work: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    """Start `zoom-refine ARGS` and run `session_work` against it through the SDK's stdio client."""
    params = StdioServerParameters(command=COMMAND, args=args, env=dict(os.environ))

    async def main() -> Any:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session_work(session)

    return asyncio.run(asyncio.wait_for(main(), SPAWN_TIMEOUT_S))


def call_in_process(settings: ServerSettings, name: str, arguments: dict[str, Any]) -> Any:
    async def main() -> Any:
        async with Client(build_server(settings)) as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(main())


def test_stdio_lists_both_tools_and_crops(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots

    async def work(session: ClientSession) -> Any:
        listed = await session.list_tools()
        crop = await session.call_tool(
            "crop",
            {"image_path": str(allowed / "photo.png"), "box": [0.75, 0.6, 0.875, 0.8]},
        )
        refused = await session.call_tool(
            "crop", {"image_path": str(outside / "secret.png"), "box": [0, 0, 1, 1]}
        )
        return listed, crop, refused

    listed, crop, refused = run_stdio(["mcp", "--root", str(allowed)], work)
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == {"crop", "zoom_refine"}
    assert set(tools["crop"].input_schema["properties"]) == {"image_path", "box", "box_format"}
    assert {"image_path", "question", "options"} <= set(
        tools["zoom_refine"].input_schema["properties"]
    )
    assert not crop.is_error
    text, picture = crop.content
    assert "img1" in text.text and "original pixels" in text.text
    image = image_of(picture)
    assert image.getpixel((image.width // 2, image.height // 2)) == (255, 0, 0)
    assert refused.is_error and "outside the allowed roots" in refused.content[0].text
    assert "\n" not in refused.content[0].text


@pytest.mark.slow
def test_stdio_zoom_refine_with_the_tiny_model(roots: tuple[Path, Path]) -> None:
    from zoom_refine.testing import (
        PROTOCOL_OPTIONS,
        PROTOCOL_QUESTION,
        protocol_image,
        trained_protocol_model,
    )

    allowed, _ = roots
    protocol_image((1280, 960), "mcp").save(allowed / "scene.png")
    model = trained_protocol_model("internvl3")
    args = ["mcp", "--root", str(allowed), "--model", f"hf:{model}"]
    args += ["--max-patches", "2", "--max-new-tokens", "64"]

    async def work(session: ClientSession) -> Any:
        arguments = {
            "image_path": str(allowed / "scene.png"),
            "question": PROTOCOL_QUESTION,
            "options": list(PROTOCOL_OPTIONS),
        }
        return await session.call_tool("zoom_refine", arguments)

    result = run_stdio(args, work)
    assert not result.is_error, result.content
    text, picture = result.content
    assert text.text.startswith("Answer: A (red). Confidence: 0.90. Zoomed 1 time")
    crop = image_of(picture)
    # the trained box points at the red square (0.6–0.7 of each side): the crop shows it
    assert crop.getpixel((crop.width // 2, crop.height // 2)) == (255, 0, 0)


@pytest.mark.reliability(
    "Security",
    "MCP `crop` of a path outside --root: absolute, through `..`, through a symlink inside the "
    "root that points out, a relative path climbing out",
    "refused in one line (`outside the allowed roots`); the file is never opened",
)
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "relative"])
def test_paths_outside_the_roots_are_refused(
    roots: tuple[Path, Path], how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, outside = roots
    (allowed / "link.png").symlink_to(outside / "secret.png")
    monkeypatch.chdir(allowed)
    path = {
        "absolute": str(outside / "secret.png"),
        "dotdot": str(allowed / ".." / "outside" / "secret.png"),
        "symlink": str(allowed / "link.png"),
        "relative": "../outside/secret.png",
    }[how]
    settings = ServerSettings(roots=resolved_roots([allowed]))
    result = call_in_process(settings, "crop", {"image_path": path, "box": [0, 0, 1, 1]})
    assert result.is_error
    [message] = result.content
    assert "outside the allowed roots" in message.text and "\n" not in message.text


def test_a_symlink_to_a_file_inside_the_roots_is_followed(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    (allowed / "alias.png").symlink_to(allowed / "photo.png")
    assert (
        allowed_path(str(allowed / "alias.png"), resolved_roots([allowed]))
        == (allowed / "photo.png").resolve()
    )


@pytest.mark.reliability(
    "Security",
    "MCP `crop` / `zoom_refine` of an image over --max-pixels, a text file, a folder, a "
    "missing file",
    "refused in one line each before any model loads; the server keeps serving",
)
@pytest.mark.parametrize("case", ["too large", "text file", "folder", "missing"])
@pytest.mark.parametrize("tool", ["crop", "zoom_refine"])
def test_bad_files_are_refused_in_one_line(roots: tuple[Path, Path], case: str, tool: str) -> None:
    allowed, _ = roots
    (allowed / "notes.png").write_text("not an image")
    (allowed / "folder").mkdir()
    path = {
        "too large": allowed / "photo.png",
        "text file": allowed / "notes.png",
        "folder": allowed / "folder",
        "missing": allowed / "nope.png",
    }[case]
    words = {
        "too large": "image too large",
        "text file": "not a readable image",
        "folder": "not a file",
        "missing": "image not found",
    }[case]
    # a model that fails if ever asked: nothing reaches it
    context = ZoomContext(model="openai:none", base_url="http://127.0.0.1:9", max_pixels=1_000_000)
    settings = ServerSettings(roots=resolved_roots([allowed]), context=context)
    arguments: dict[str, Any] = {"image_path": str(path)}
    arguments |= {"box": [0, 0, 1, 1]} if tool == "crop" else {"question": "Colour?"}
    result = call_in_process(settings, tool, arguments)
    assert result.is_error
    [message] = result.content
    assert words in message.text and "\n" not in message.text


@pytest.mark.reliability(
    "Security",
    "MCP `crop` with a NaN box, a box of three numbers, a box 1e12 pixels wide",
    "NaN and short boxes refused in one line; the huge box is clamped to the image",
)
def test_hostile_boxes(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    settings = ServerSettings(roots=resolved_roots([allowed]))
    photo = str(allowed / "photo.png")
    with pytest.raises(InvalidInputError, match="four finite numbers"):
        crop_image(settings, photo, [math.nan, 0, 1, 1], "norm1")
    short = call_in_process(settings, "crop", {"image_path": photo, "box": [0, 0, 1]})
    assert short.is_error and "four finite numbers" in short.content[0].text
    huge = call_in_process(
        settings,
        "crop",
        {"image_path": photo, "box": [-1e12, -1e12, 1e12, 1e12], "box_format": "original"},
    )
    assert not huge.is_error
    assert image_of(huge.content[1]).size == (1600, 1000)


@pytest.mark.reliability(
    "Security",
    "MCP `zoom_refine` asked for 99 hops or a NaN confidence threshold",
    "refused in one line; the server's own limits stand",
)
@pytest.mark.parametrize(
    ("setting", "words"),
    [({"max_hops": 99}, "max_hops must be 1..8"), ({"max_hops": 0}, "max_hops must be 1..8"),
     ({"confidence_threshold": 2.0}, "confidence_threshold must be")],
)  # fmt: skip
def test_per_call_settings_are_bounded(
    roots: tuple[Path, Path], setting: dict[str, Any], words: str
) -> None:
    allowed, _ = roots
    settings = ServerSettings(roots=resolved_roots([allowed]))
    arguments = {"image_path": str(allowed / "photo.png"), "question": "Colour?", **setting}
    result = call_in_process(settings, "zoom_refine", arguments)
    assert result.is_error and words in result.content[0].text


def test_a_root_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="is not a folder"):
        resolved_roots([tmp_path / "missing"])


def test_cli_refuses_a_bad_root_in_one_line(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [COMMAND, "mcp", "--root", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=SPAWN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "is not a folder" in done.stderr
