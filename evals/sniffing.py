"""Dataset file sniffing: the one annotation file in a folder, a path that is no file or an empty
file, a file's first bytes, and whether it starts like parquet or JSON. `Located` is what a
benchmark's `locate` finds: the layout, the annotation file and the folder image paths resolve in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoom_refine.tools.errors import InvalidInputError

SNIFF_BYTES = 1 << 16


@dataclass(frozen=True)
class Located:
    layout: str
    file: Path
    """The annotation file (for `folder`: the root)."""
    root: Path
    """The folder image paths resolve in, and must stay inside."""
    categories: tuple[str, ...] = ()
    """V* folder layout: the category sub-folders present."""


def single_file(folder: Path, suffixes: tuple[str, ...], name: str, example: str) -> Path:
    found = sorted(
        item
        for item in folder.iterdir()
        if item.is_file() and item.suffix.lower() in suffixes and not item.name.startswith(".")
    )
    if len(found) == 1:
        return found[0]
    kinds = " / ".join(suffixes)
    if not found:
        raise InvalidInputError(
            f"{folder} holds no {kinds} file; pass the {name} annotation file (e.g. {example})"
        )
    names = ", ".join(item.name for item in found)
    raise InvalidInputError(f"{folder} holds several {kinds} files ({names}); pass one of them")


def check_not_empty(path: Path) -> None:
    if not path.is_file():
        raise InvalidInputError(f"not a file: {path} (pass the dataset file or its folder)")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"dataset file is empty (0 bytes): {path} (re-download it)")


def file_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def starts_with(path: Path, magic: bytes) -> bool:
    return file_head(path, len(magic)) == magic


def looks_like_json(path: Path) -> bool:
    return file_head(path, 4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{")


__all__ = [
    "SNIFF_BYTES",
    "Located",
    "check_not_empty",
    "file_head",
    "looks_like_json",
    "single_file",
    "starts_with",
]
