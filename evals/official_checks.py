"""What `zoom-refine official verify` counts: checks and mismatches per part, and how many inputs
each part generates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Mismatch:
    """One input on which the official function and the preset disagree."""

    given: str
    official: str
    preset: str

    def reproducer(self, part: str) -> str:
        return f"{part}: {self.given} -> official {self.official}, preset {self.preset}"


@dataclass
class PartResult:
    """A part's checks and mismatches."""

    name: str
    checks: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def check(self, given: Callable[[], str], official: Any, preset: Any) -> None:
        self.checks += 1
        if official != preset:
            self.mismatches.append(Mismatch(given(), repr(official), repr(preset)))

    def compare(
        self, given: Callable[[], str], official: Callable[[], Any], preset: Callable[[], Any]
    ) -> None:
        """`check` on the two sides' results, each computed here: a side that raises gives
        `Raised` (a mismatch unless both raise alike), so one bad input never ends the run."""
        self.check(given, attempt(official), attempt(preset))

    def smallest(self, count: int) -> list[Mismatch]:
        return sorted(self.mismatches, key=lambda item: (len(item.given), item.given))[:count]


@dataclass(frozen=True)
class Raised:
    """What a side gave when it raised: the exception's type and message."""

    error: str

    def __repr__(self) -> str:
        return f"raised {self.error}"


def attempt(call: Callable[[], Any]) -> Any:
    """`call()`, or `Raised` when it raises (the official code is run as it is, any input)."""
    try:
        return call()
    except Exception as error:  # reported as that input's outcome, never a crash
        return Raised(f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Scale:
    """How many inputs each part generates (the defaults: over 20,000 checks in all)."""

    box_replies: int = 420
    box_sizes: int = 30
    answers: int = 3000
    tiles: int = 3000
    rows: int = 400
    sets: int = 300
    big_images: bool = True

    @classmethod
    def small(cls) -> Scale:
        return cls(
            box_replies=60, box_sizes=6, answers=300, tiles=300, rows=60, sets=40, big_images=False
        )
