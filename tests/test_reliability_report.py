"""RELIABILITY.md lists every `reliability`-marked test, each as it last ran, none failing.

The report itself is written by `python scripts/reliability_report.py` from a real run; this
test only keeps it in step with the suite (a new hostile case without a row fails here).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "RELIABILITY.md"
sys.path.insert(0, str(ROOT / "scripts"))

from reliability_report import render  # noqa: E402


def collected_cases(tmp_path: Path) -> list[dict[str, str]]:
    results = tmp_path / "cases.json"
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "reliability"]
    command += ["-p", "no:cacheprovider", f"--reliability-json={results}"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    cases: list[dict[str, str]] = json.loads(results.read_text())
    return cases


def rows(report: str) -> dict[str, tuple[str, str]]:
    """test id → (case, result) for each table row of the report."""
    found: dict[str, tuple[str, str]] = {}
    for line in report.splitlines():
        match = re.match(r"^\| (.+?) \| .+ \| (.+?) \| `(.+)` \|$", line)
        if match:
            found[match.group(3)] = (match.group(1), match.group(2))
    return found


@pytest.mark.slow
def test_the_report_lists_every_marked_test_and_none_failed(tmp_path: Path) -> None:
    cases = collected_cases(tmp_path)
    assert len(cases) >= 40  # images, model output, datasets, faults, out of memory, security
    listed = rows(REPORT.read_text())
    missing = sorted({case["test"] for case in cases} - set(listed))
    assert not missing, (
        f"run `python scripts/reliability_report.py`; not in RELIABILITY.md: {missing}"
    )
    stale = sorted(set(listed) - {case["test"] for case in cases})
    assert not stale, f"RELIABILITY.md lists tests that no longer exist: {stale}"
    assert all(result == "passed" for _, result in listed.values())
    areas = {case["area"] for case in cases}
    assert {"Images", "Model output", "Datasets", "Server faults", "Security"} <= areas


def test_render_groups_by_area_and_marks_failures() -> None:
    cases = [
        {
            "area": "Security",
            "case": "a|b",
            "outcome": "refused",
            "test": "t.py::x",
            "result": "passed",
        },
        {
            "area": "Images",
            "case": "empty",
            "outcome": "error",
            "test": "t.py::y",
            "result": "failed",
        },
    ]
    report = render(cases)
    assert report.index("## Images") < report.index("## Security")  # the fixed area order
    assert "| empty | error | **FAILED** | `t.py::y` |" in report
    assert "a\\|b" in report  # a pipe in a cell does not break the table
    assert "**2 cases: 1 passed, 1 failed.**" in report
