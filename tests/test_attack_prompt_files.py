"""Hostile prompt files and checkouts (issue 21, items 3, 4 and 7): `--prompts FILE` and
`zoom-refine prompts from-official` answer every one in one line (exit 2, no traceback), and a
file written over is replaced whole or left as it was."""

from __future__ import annotations

import errno
import os
from importlib import resources
from pathlib import Path

import pytest
from PIL import Image
from test_official_prompts import BASE_TEMPLATES, base_source, make_repo
from typer.testing import CliRunner

from zoom_refine.agent.official_prompts import write_official_prompt_set
from zoom_refine.agent.prompt_set import default_prompt_set, load_prompt_set
from zoom_refine.cli import app
from zoom_refine.testing import ScriptedVisionModel
from zoom_refine.tools import files
from zoom_refine.tools.errors import InvalidInputError

runner = CliRunner()
DEEP = 100_000
"""How deep the nesting attacks go."""


def one_error_line(args: list[str]) -> str:
    """Run the CLI; assert it failed in one line with exit 2 and no traceback; that line."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def ask_with(prompts: Path, tmp_path: Path) -> list[str]:
    image = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(image)
    return ["ask", str(image), "Colour?", "--prompts", str(prompts)]


# --- item 3: prompt sets ------------------------------------------------------------------------


@pytest.mark.reliability(
    "Prompt sets",
    f"a --prompts TOML file nested {DEEP:,} deep (arrays, inline tables)",
    "one error line naming the file and the nesting (no RecursionError traceback)",
)
@pytest.mark.parametrize(
    "value", ["[" * DEEP + "]" * DEEP, "{a = " * DEEP + "1" + "}" * DEEP], ids=["arrays", "tables"]
)
def test_a_deeply_nested_prompt_set_is_one_line(value: str, tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(f"description = {value}\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        load_prompt_set(path)
    line = one_error_line(ask_with(path, tmp_path))
    assert str(path) in line and "nested too deeply" in line


@pytest.mark.reliability(
    "Prompt sets",
    "a --prompts file that begins with a UTF-8 byte order mark (as some editors save it)",
    "accepted: the mark is skipped and the set equals the same file without it",
)
def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    text = (
        resources.files("zoom_refine.agent")
        .joinpath("prompt_sets", "default.toml")
        .read_text(encoding="utf-8")
    )
    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert marked.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_prompt_set(marked).templates == load_prompt_set(plain).templates
    assert load_prompt_set(marked).sha256 == default_prompt_set().sha256


def test_a_huge_prompt_set_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    with path.open("wb") as handle:
        handle.truncate(2 << 20)  # 2 MiB of zeros, sparse
    with pytest.raises(InvalidInputError, match="2097152 bytes; a prompt set is a few kB"):
        load_prompt_set(path)


# --- item 4: `prompts from-official` on hostile checkouts --------------------------------------


@pytest.mark.reliability(
    "Prompt sets",
    '`prompts from-official` on a checkout whose template is `"\\ud800 {question}"` (a lone '
    "surrogate, which no UTF-8 file can hold)",
    "one error line naming the key and the surrogate; nothing written",
)
def test_a_lone_surrogate_in_an_official_value_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = base_source(BASE_TEMPLATES).replace(
        repr(BASE_TEMPLATES["user_template_1"]), '"\\ud800 {question}"'
    )
    repo = make_repo(tmp_path, base=source)
    line = one_error_line(["prompts", "from-official", str(repo)])
    assert "prompts['user_template_1'] holds U+D800, a lone surrogate" in line
    assert not (tmp_path / "official-base-prompts.toml").exists()


@pytest.mark.reliability(
    "Prompt sets",
    "`prompts from-official` on a checkout whose path holds a byte that is not UTF-8 (0xFF)",
    "the prompt set is written (the byte escaped in its comments) and loads",
)
def test_a_checkout_path_that_is_not_utf8_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parent = Path(os.fsdecode(bytes(tmp_path) + b"/odd-\xff-name"))
    parent.mkdir()
    repo = make_repo(parent)
    out = tmp_path / "set.toml"
    result = runner.invoke(app, ["prompts", "from-official", str(repo), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")  # strict: valid UTF-8
    assert "odd-\\xff-name" in text
    assert load_prompt_set(out).templates["refine"].startswith("Here is a sharper crop")


@pytest.mark.reliability(
    "Prompt sets",
    f"`prompts from-official` on an official file holding `x = - - … 1` or `not not … 1`, "
    f"{DEEP:,} deep",
    "one error line saying the file is nested too deeply (no MemoryError or RecursionError)",
)
@pytest.mark.parametrize("operator", ["- ", "not ", "~"])
def test_a_deeply_nested_official_file_is_one_line(
    operator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    repo = make_repo(tmp_path, base="x = " + operator * DEEP + "1\n" + base_source(BASE_TEMPLATES))
    line = one_error_line(["prompts", "from-official", str(repo)])
    assert "ZoomRefine_Base.py: nested too deeply to parse" in line
    assert not (tmp_path / "official-base-prompts.toml").exists()


@pytest.mark.reliability(
    "Prompt sets",
    "`prompts from-official` on a checkout whose official file, or its folder, is a symlink "
    "to a file outside the checkout",
    "refused in one line naming the link and where it leads; nothing written",
)
@pytest.mark.parametrize("linked", ["file", "folder"])
def test_files_linked_from_outside_the_checkout_are_refused(
    linked: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    outside = make_repo(tmp_path / "elsewhere")
    repo = tmp_path / "checkout"
    (repo / "zoomrefine").mkdir(parents=True)
    if linked == "file":
        (repo / "zoomrefine" / "ZoomRefine_Base.py").symlink_to(
            outside / "zoomrefine" / "ZoomRefine_Base.py"
        )
    else:
        (repo / "zoomrefine").rmdir()
        (repo / "zoomrefine").symlink_to(outside / "zoomrefine")
    line = one_error_line(["prompts", "from-official", str(repo)])
    assert "is a symlink leading out of the checkout" in line and "refused" in line
    assert not (tmp_path / "official-base-prompts.toml").exists()


def test_a_link_inside_the_checkout_is_followed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    real = repo / "zoomrefine" / "ZoomRefine_Base.py"
    real.rename(repo / "real_base.py")
    real.symlink_to(repo / "real_base.py")
    path, official, _ = write_official_prompt_set(repo, tmp_path / "set.toml")
    assert path.is_file() and official.templates["refine"].startswith("<image>\nHere is")


# --- item 7: a file written over is replaced whole or left as it was ---------------------------


@pytest.mark.reliability(
    "Prompt sets",
    "`prompts from-official -o F --force` whose write fails half-way (the disk fills while "
    "the new file is flushed)",
    "one error line; F keeps its old bytes, and no temporary file is left beside it",
)
def test_a_failed_overwrite_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path)
    target = tmp_path / "out" / "set.toml"
    target.parent.mkdir()
    target.write_text("# my own good prompt set\n", encoding="utf-8")
    before = target.read_bytes()

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full_disk)
    line = one_error_line(["prompts", "from-official", str(repo), "-o", str(target), "--force"])
    assert f"cannot write {target}" in line and "No space left" in line
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["set.toml"]


def test_an_unencodable_text_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "kept.txt"
    target.write_bytes(b"old")
    with pytest.raises(UnicodeEncodeError):
        files.replace_text(target, "new \ud800 text")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_a_lenient_write_escapes_what_it_cannot_encode(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_bytes(b"old")
    files.replace_text(target, "new \ud800 text", errors="backslashreplace")
    assert target.read_bytes() == b"new \\ud800 text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_two_writes_never_share_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    names = {files.temporary_path(target).name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(".config.json.") for n in names)
    files.replace_bytes(target, b"{}")
    assert target.read_bytes() == b"{}" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_scripted_model_is_not_called_for_a_refused_prompt_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedVisionModel(replies=[])
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    path = tmp_path / "deep.toml"
    path.write_text("description = " + "[" * DEEP + "]" * DEEP + "\n", encoding="utf-8")
    one_error_line(ask_with(path, tmp_path))
    assert model.requests == []
