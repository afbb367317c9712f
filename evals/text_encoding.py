"""Text encodings of dataset files: the checks that refuse a file, and lines decoded as UTF-8.

Text is UTF-8, with or without a byte-order mark. A file in UTF-16 / UTF-32, or whose first 64 KiB
are not UTF-8, is refused in one line naming the encoding or the first bad byte and its line; a
row further on holding bytes that are not UTF-8 is a BadRow saying the same (`NOT_UTF8`). No byte
is ever replaced: such bytes are kept as surrogate escapes (`decode_line`), which `is_text` tells
apart and `shown_text` shows as U+FFFD in messages.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from zoom_refine.evals.sniffing import check_not_empty, file_head
from zoom_refine.tools.errors import InvalidInputError

_WIDE_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

NOT_UTF8 = "not UTF-8 ({}); save the file as UTF-8"
"""The reason of a row holding bytes that are not UTF-8 (`{}`: "byte 0xE9 at line 3")."""


def check_dataset_file(path: Path) -> None:
    """Refuse a path that is not a file, an empty file, or text in UTF-16 / UTF-32: dataset text
    files are read as UTF-8 (with or without a byte-order mark), whatever their suffix."""
    check_not_empty(path)
    head = file_head(path, 64)
    for mark, name in _WIDE_MARKS:
        if head.startswith(mark):
            raise InvalidInputError(
                f"{path} is {name} text (it starts with a {name} byte-order mark); save it as UTF-8"
            )
    if _looks_like_utf16(head):
        raise InvalidInputError(
            f"{path} looks like UTF-16 text (every other byte is NUL); save it as UTF-8"
        )


def _looks_like_utf16(head: bytes) -> bool:
    """UTF-16 without a byte-order mark: over the first 16 bytes, ASCII text with a NUL after
    (little-endian) or before (big-endian) each character."""
    if len(head) < 16:
        return False
    even, odd = head[0:16:2], head[1:16:2]
    return (all(even) and not any(odd)) or (all(odd) and not any(even))


def _bad_byte(data: bytes, position: int, first_line: int = 1) -> str:
    """ "byte 0xE9 at line 3": the byte at `position` of `data`, whose first line is
    `first_line`."""
    line = first_line + data.count(b"\n", 0, position)
    return f"byte 0x{data[position]:02X} at line {line}"


def not_utf8_error(path: Path, data: bytes, position: int) -> InvalidInputError:
    return InvalidInputError(f"{path} is not UTF-8 ({_bad_byte(data, position)}); save it as UTF-8")


def check_utf8_head(path: Path) -> None:
    """Refuse a file whose first 64 KiB are not UTF-8, naming the first bad byte and its line.
    Further on, lines are checked as they are read: a row holding bytes that are not UTF-8
    becomes a BadRow (`NOT_UTF8`); no byte is ever replaced."""
    head = file_head(path)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise not_utf8_error(path, head, error.start) from error


def decode_line(raw: bytes, number: int) -> tuple[str, str | None]:
    """Line `number` as text, and where it stops being UTF-8 (None when it does not): bytes that
    are not UTF-8 are kept as surrogate escapes, never replaced, and the row refused."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return raw.decode("utf-8", "surrogateescape"), _bad_byte(raw, error.start, number)


def is_text(value: str) -> bool:
    """False when `value` holds bytes that were not UTF-8 (kept as surrogate escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_text(text: str) -> str:
    """`text` fit for an error message: bytes that were not UTF-8 shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


__all__ = [
    "NOT_UTF8",
    "check_dataset_file",
    "check_utf8_head",
    "decode_line",
    "is_text",
    "not_utf8_error",
    "shown_text",
]
