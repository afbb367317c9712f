"""Files the CLI writes over are replaced whole or left as they were (issue 21, item 7): pictures
(`ask --save-trace`, `trace --save`) and a run's config.json, when the write fails half-way."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import dataset_fixtures as fixtures
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from zoom_refine.cli import app
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel
from zoom_refine.tools import files

runner = CliRunner()
REFINE = "Rechecked Answer: A\nConfidence: 0.9"


def scene(path: Path) -> Path:
    image = Image.new("RGB", (2000, 1500), (128, 128, 128))  # larger than the smallest crop
    image.paste((255, 0, 0), (1200, 900, 1400, 1050))
    image.save(path)
    return path


def ask(image: Path, folder: Path, box: str, monkeypatch: pytest.MonkeyPatch) -> Result:
    localize = f"Answer: B\nBounding box: {box}"
    model = ScriptedVisionModel(replies=[localize, REFINE])
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    return runner.invoke(app, ["ask", str(image), "Colour?", "--save-trace", str(folder)])


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.reliability(
    "Records",
    "`ask --save-trace FOLDER` over the pictures of an earlier run, the write failing half-way "
    "(the disk fills while trace.json is written, after the new overview was drawn)",
    "one error line; overview.png, hop-1.png and trace.json keep the earlier run's bytes, and no "
    "temporary is left",
)
def test_pictures_that_fail_half_way_leave_the_earlier_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = scene(tmp_path / "scene.png")
    folder = tmp_path / "pictures"
    first = ask(image, folder, "[0.6, 0.6, 0.7, 0.7]", monkeypatch)
    assert first.exit_code == 0, first.output
    before = contents(folder)
    assert sorted(before) == ["hop-1.png", "overview.png", "trace.json"]

    real_write_text = Path.write_text

    def full_disk(self: Path, *args: object, **kwargs: object) -> int:
        if self.name == "trace.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full_disk)
    second = ask(image, folder, "[0.1, 0.1, 0.3, 0.2]", monkeypatch)  # another box: new pictures
    assert second.exit_code == 2, second.output
    (line,) = second.stderr.strip().splitlines()[-1:]
    assert line == f"error: cannot write the pictures to {folder}: No space left on device"
    assert contents(folder) == before

    monkeypatch.setattr(Path, "write_text", real_write_text)
    third = ask(image, folder, "[0.1, 0.1, 0.3, 0.2]", monkeypatch)
    assert third.exit_code == 0
    after = contents(folder)
    assert sorted(after) == sorted(before) and after["overview.png"] != before["overview.png"]


def test_a_config_json_that_fails_half_way_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RuleVisionModel()
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)
    data = fixtures.write_hr_bench_tsv(tmp_path / "data")
    out = tmp_path / "run"
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--limit", "1"]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "config.json").read_bytes()

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full_disk)
    changed = runner.invoke(app, [*args[:-2], "--limit", "3", "--max-hops", "2", "--resume-anyway"])
    assert changed.exit_code == 2, changed.output
    assert "config.json" in changed.stderr and "Traceback" not in changed.output
    assert (out / "config.json").read_bytes() == before
    json.loads(before)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
