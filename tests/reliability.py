"""Records `@pytest.mark.reliability(area, case, outcome)` tests and their results as JSON.

`scripts/reliability_report.py` runs the marked tests with `--reliability-json PATH` and turns
the file into RELIABILITY.md, so the report says what the tests actually did, never by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

MARKER = "reliability"


@dataclass
class Case:
    """One hostile input or fault: where it belongs, what it is, how it must be handled."""

    area: str
    case: str
    outcome: str
    test: str
    result: str = "not run"
    """`passed`, `failed`, `skipped` or `not run` (collected only)."""


def case_of(item: pytest.Item) -> Case | None:
    """The case an item's marker declares, or None when it has no `reliability` marker."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if len(marker.args) != 3 or not all(isinstance(a, str) and a for a in marker.args):
        raise pytest.UsageError(
            f"{item.nodeid}: use @pytest.mark.reliability(area, case, outcome), three strings"
        )
    area, case, outcome = marker.args
    return Case(area=area, case=case, outcome=outcome, test=item.nodeid)


class ReliabilityRecorder:
    """A pytest plugin: collects marked items, records each one's result, writes JSON at exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cases: dict[str, Case] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            case = case_of(item)
            if case is not None:
                self.cases[item.nodeid] = case

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        case = self.cases.get(report.nodeid)
        if case is None:
            return
        if report.failed:
            case.result = "failed"  # a failing setup or teardown fails the case too
        elif report.skipped and case.result == "not run":
            case.result = "skipped"
        elif report.when == "call" and report.passed and case.result == "not run":
            case.result = "passed"

    def pytest_sessionfinish(self) -> None:
        payload: list[dict[str, Any]] = [asdict(case) for case in self.cases.values()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
