"""`zoom-refine official verify CHECKOUT` on an invented checkout (`official_fixture`): the
official layout and function names, our behaviour, and planted differences that the verifier must
report, each with a reproducer. The real checkout is checked by running the command on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from official_fixture import PLANT_PARTS, PLANTS, write_fixture_checkout
from typer.testing import CliRunner

from zoom_refine.cli import app
from zoom_refine.evals.official_checks import Scale
from zoom_refine.evals.official_extract import load_official
from zoom_refine.evals.official_verify import verify
from zoom_refine.tools.errors import OfficialCheckoutError

SMALL = Scale.small()


def results(root: Path) -> dict[str, list[str]]:
    found = verify(load_official(root), scale=SMALL)
    return {part.name: [m.reproducer(part.name) for m in part.smallest(3)] for part in found}


def test_an_unplanted_fixture_checkout_has_no_mismatches(tmp_path: Path) -> None:
    found = verify(load_official(write_fixture_checkout(tmp_path)), scale=SMALL)
    assert {part.name: part.mismatches for part in found} == {
        name: [] for parts in PLANT_PARTS.values() for name in parts
    }
    assert all(part.checks > 0 for part in found)


@pytest.mark.parametrize("plant", PLANTS)
def test_each_planted_difference_is_reported_with_a_reproducer(tmp_path: Path, plant: str) -> None:
    found = results(write_fixture_checkout(tmp_path, (plant,)))
    parts = PLANT_PARTS[plant]
    assert all(found[part] for part in parts), f"{plant} not reported in {parts}: {found}"
    assert all(not shown for name, shown in found.items() if name not in parts), found
    for part in parts:
        reproducer = found[part][0]
        assert reproducer.startswith(f"{part}: ") and " -> official " in reproducer
        assert ", preset " in reproducer


def test_the_reproducers_name_the_planted_inputs(tmp_path: Path) -> None:
    plants = ("first_box", "no_truncated", "count_unanswered", "four_letter_phrase")
    found = results(write_fixture_checkout(tmp_path, plants))
    assert "bbox" in found["boxes"][0].lower() or "bounding box" in found["boxes"][0].lower()
    assert all("truncated" in line for line in found["images"])
    assert all("zoom-refine set" in line for line in found["scoring"])  # denominators differ
    assert "HR-Bench row" in found["questions"][0]


def test_an_official_function_that_raises_is_a_reported_mismatch_not_a_crash(
    tmp_path: Path,
) -> None:
    found = results(write_fixture_checkout(tmp_path, ("raises_on_empty",)))
    assert found["answers"][0] == (
        "answers: first call, reply='' -> official raised TypeError: planted: no reply, preset None"
    )


def test_the_command_exits_0_on_agreement_and_1_on_mismatches(tmp_path: Path) -> None:
    runner = CliRunner()
    clean = write_fixture_checkout(tmp_path / "clean")
    result = runner.invoke(app, ["official", "verify", str(clean), "--small"])
    assert result.exit_code == 0, result.output
    assert "total:" in result.output and "0 mismatches" in result.output
    planted = write_fixture_checkout(tmp_path / "planted", ("refine_fallback",))
    result = runner.invoke(app, ["official", "verify", str(planted), "--small", "--show", "2"])
    assert result.exit_code == 1, result.output
    assert "answers: 600 inputs," in result.output and "refine call, reply=" in result.output


def test_the_help_says_it_runs_the_checkouts_code() -> None:
    result = CliRunner().invoke(app, ["official", "verify", "--help"])
    assert result.exit_code == 0
    assert "RUNS code from CHECKOUT" in " ".join(result.output.split())


@pytest.mark.reliability(
    "Official verify", "checkout lacking a function", "one line naming it, exit 2"
)
def test_a_checkout_missing_a_function_is_a_user_error(tmp_path: Path) -> None:
    root = write_fixture_checkout(tmp_path)
    base = root / "zoomrefine" / "ZoomRefine_Base.py"
    base.write_text(base.read_text().replace("def parse_bbox(", "def parse_box("))
    result = CliRunner().invoke(app, ["official", "verify", str(root)])
    assert result.exit_code == 2
    assert "lacks parse_bbox" in result.output and "Traceback" not in result.output


@pytest.mark.reliability(
    "Official verify", "a file symlinked out of the checkout", "refused before reading, exit 2"
)
def test_a_symlink_leading_out_of_the_checkout_is_refused(tmp_path: Path) -> None:
    root = write_fixture_checkout(tmp_path / "checkout")
    outside = tmp_path / "outside.py"
    outside.write_text("def calculate_accuracies(path):\n    return {}\n")
    target = root / "zoomrefine" / "zoomrefine_acc.py"
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(OfficialCheckoutError, match="symlink leading out"):
        load_official(root)
    result = CliRunner().invoke(app, ["official", "verify", str(root)])
    assert result.exit_code == 2 and "symlink leading out" in result.output


def test_a_missing_checkout_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["official", "verify", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "Traceback" not in result.output
