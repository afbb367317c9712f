"""Values a model wrote, made safe to keep: plain JSON, bounded in depth, strict on output.

A tool call's arguments come from the model (or a server's parser), so they may hold anything
its JSON or a Python literal allows: `NaN`, `Infinity`, `1e999` (read as infinity), integers
of thousands of digits, tuple keys, sets, nesting thousands deep. `plain_json` says whether a
value is one the graph may carry (JSON types, string keys, bounded depth, integers that fit
64 bits, as checkpoints' msgpack needs) and gives it back with tuples as lists. `strict_json`
turns a record into what strict JSON accepts (`json.dumps(..., allow_nan=False)`) and
checkpoints can store: a non-finite number becomes the string JSON's lax form writes
(`"NaN"`, `"Infinity"`, `"-Infinity"`), an integer past 64 bits a short string. The raw reply
text is never changed: only the numbers read from it.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of lists and objects a call's arguments may have (a real call has 2)."""
INT_RANGE = (-(2**63), 2**64 - 1)
"""Smallest and largest integer kept as a number: what msgpack (checkpoints) can hold. Python
also refuses to print integers over 4,300 digits, so a longer one would fail every writer."""
SHOWN_CHARS = 200
"""How much of a value an error message quotes."""

TOO_DEEP = f"the arguments are nested more than {MAX_DEPTH} levels deep"
NOT_JSON_VALUE = "the arguments hold a {kind}, which JSON has no form for"
KEY_NOT_TEXT = "the arguments have a key that is not text: {key}"
INT_TOO_LONG = "an integer too large to use (more than 19 digits)"


def plain_json(value: object, depth: int = 0) -> tuple[Any, str | None]:
    """`value` as plain JSON data (tuples as lists), or None and why it is not: a key that
    is not a string, a set, bytes or another non-JSON value, an integer too long to print,
    or nesting deeper than `MAX_DEPTH`. Recursion stops at `MAX_DEPTH`, so a value nested
    thousands deep is refused without exhausting the stack."""
    if depth > MAX_DEPTH:
        return None, TOO_DEEP
    if value is None or isinstance(value, (str, bool, float)):
        return value, None
    if isinstance(value, int):
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            return None, NOT_JSON_VALUE.format(kind=INT_TOO_LONG)
        return value, None
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            plain, reason = plain_json(item, depth + 1)
            if reason is not None:
                return None, reason
            items.append(plain)
        return items, None
    if isinstance(value, dict):
        mapping: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                return None, KEY_NOT_TEXT.format(key=shown(key))
            plain, reason = plain_json(item, depth + 1)
            if reason is not None:
                return None, reason
            mapping[key] = plain
        return mapping, None
    return None, NOT_JSON_VALUE.format(kind=type(value).__name__)


def strict_json(value: Any, depth: int = 0) -> Any:
    """`value` with every non-finite float as a string (`"NaN"`, `"Infinity"`,
    `"-Infinity"`), every integer past 64 bits as a short string, and tuples as lists,
    so `json.dumps(..., allow_nan=False)` accepts it. Past `MAX_DEPTH` levels below the
    record's own (records nest a few levels), a part is kept as a quoted summary."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _non_finite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if INT_RANGE[0] <= value <= INT_RANGE[1] else shown(value)
    if isinstance(value, (str, bool)) or value is None:
        return value
    if depth > 2 * MAX_DEPTH:
        return shown(value)
    if isinstance(value, dict):
        return {key: strict_json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item, depth + 1) for item in value]
    return value


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def shown(value: object) -> str:
    """A short quote of `value` for a message: its repr cut to `SHOWN_CHARS`; an integer too
    long to print, or a value too deep to repr, described instead of raising."""
    if isinstance(value, int) and value.bit_length() > 4_000:
        return f"<an integer of about {int(value.bit_length() * math.log10(2))} digits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer over 4,300 digits inside; too deep
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
