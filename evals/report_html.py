"""The report page's small HTML helpers: every value a user or a model supplied is escaped and,
in running text, isolated for bidirectional text (`<bdi>`), so a right-to-left override in an id
or an answer cannot reorder the text around it."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from zoom_refine.evals.report_data import NO_VALUE, plain

ID_CHARS = 48
"""Longest sample id shown in a list of ids (the card itself shows it whole, wrapped)."""


def attr(value: Any) -> str:
    """`plain(value)` escaped for an attribute value or SVG text (no markup allowed there)."""
    return html.escape(plain(value))


def text(value: Any) -> str:
    """`plain(value)` escaped and isolated (`<bdi>`): for HTML running text."""
    return f"<bdi>{html.escape(plain(value))}</bdi>"


def percent(value: float | None, digits: int = 2) -> str:
    return NO_VALUE if value is None else f"{100 * value:.{digits}f}%"


def short_id(sample_id: Any) -> str:
    """An id cut to `ID_CHARS` characters (with "…"), escaped and isolated."""
    shown = plain(sample_id)
    return text(shown if len(shown) <= ID_CHARS else shown[: ID_CHARS - 1] + "…")


def id_links(ids: Sequence[str], anchors: Mapping[str, str], limit: int = 30) -> str:
    """` (ids 1, 2, …)` with each id a link to its sample's card."""
    if not ids:
        return ""
    links = [
        f'<a href="#{anchors[i]}">{short_id(i)}</a>' if i in anchors else short_id(i)
        for i in ids[:limit]
    ]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f' <span class="ids">(ids {", ".join(links)}{more})</span>'
