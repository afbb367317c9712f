"""Regenerate the README's Mermaid drawing from the compiled graph (never drawn by hand).

Run `python scripts/update_readme_graph.py`; `tests/test_readme.py` fails while it is stale.
"""

from __future__ import annotations

import re
from pathlib import Path

from zoom_refine import build_graph

README = Path(__file__).parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- graph:start -->\n```mermaid\n).*?(```\n<!-- graph:end -->)", re.DOTALL)


def main() -> None:
    drawing = build_graph().get_graph().draw_mermaid()
    text = README.read_text()
    updated = BLOCK.sub(lambda m: m.group(1) + drawing + m.group(2), text)
    README.write_text(updated)


if __name__ == "__main__":
    main()
