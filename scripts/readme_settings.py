"""Regenerate the README's configuration table from `ZoomContext`'s field metadata.

Run `python scripts/readme_settings.py`; `tests/test_readme.py` fails while the table is stale.
The table lies between the two marker comments; nothing else in the README is touched.
"""

from __future__ import annotations

import re
from pathlib import Path

from zoom_refine.agent.context import settings_table

README = Path(__file__).parents[1] / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
BLOCK = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.DOTALL)


def with_settings_table(text: str) -> str:
    """`text` (the README) with the block between the markers made from the metadata."""
    if not BLOCK.search(text):
        raise SystemExit(f"README.md has no {START} … {END} block")
    return BLOCK.sub(lambda _: f"{START}\n{settings_table()}{END}", text)


def main() -> None:
    text = README.read_text()
    updated = with_settings_table(text)
    if updated != text:
        README.write_text(updated)
        print(f"updated the configuration table in {README}")


if __name__ == "__main__":
    main()
