"""What `zoom-refine report` reads: run folders merged (shards of one run only), each sample's
picture as it is now, and values as plain words.

Shards merge; runs made differently do not: every folder's config.json is compared with the
first one's by `evals.run_config.result_changes` (the same rule that guards a resume), and a
difference in a result-changing setting, the model or the benchmark refuses the report with one
`RunsDifferError` line. A sample's picture is read where the run read it; when it is no longer
the image the run saw (its SHA-256 differs) or cannot be read at all, that card says so and the
rest of the report is made as usual.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoom_refine.evals.loaders import load_samples
from zoom_refine.evals.records import record_key
from zoom_refine.evals.run_config import Change, result_changes
from zoom_refine.evals.samples import Sample
from zoom_refine.evals.store import PredictionStore
from zoom_refine.tools.errors import InvalidInputError, RunsDifferError, ZoomRefineError
from zoom_refine.tools.images import load_image

THUMBNAIL_SIDE = 360
"""Longest side, in pixels, of each sample's thumbnail (as embedded and as shown, at zoom 100%)."""
BASELINE = "baseline"
NO_VALUE = "—"
SHOWN_CHARS = 40
"""Longest setting value quoted in a refusal to merge, in characters."""

NO_CONFIG = "no config.json in {path} (it is written when `zoom-refine eval` starts)"
BAD_CONFIG = (
    "{path} cannot be read ({error}): run the same `zoom-refine eval` command again to rewrite it"
)
NO_PREDICTIONS = "no predictions.jsonl in {folder} (run `zoom-refine eval … --out {folder}` first)"
RUNS_DIFFER = (
    "runs differ in {changes}; report them separately (shards of one run merge: same model, "
    "benchmark and settings)"
)
CHANGE = "{name}: {first} has {old}, {other} has {new}"
IMAGE_CHANGED = "the image changed since the run (SHA-256 {now}…, the run saw {then}…): no boxes"
IMAGE_UNREADABLE = "the image cannot be shown: {reason}"


def merge_runs(folders: Iterable[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first folder's config and the records of every folder (shards), one per key.
    RunsDifferError when a folder's config.json records other result-changing settings than
    the first's (`evals.run_config.result_changes`)."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    config: dict[str, Any] = {}
    first: Path | None = None
    for folder in folders:
        path = folder / "predictions.jsonl"
        if not path.exists():
            raise InvalidInputError(NO_PREDICTIONS.format(folder=folder))
        own = read_config(folder)
        if first is None:
            config, first = own, folder
        else:
            check_same_run(config, own, first, folder)
        for record in PredictionStore(path, read_only=True):  # the run may still be going
            records[record_key(record)] = record
    return config, list(records.values())


def check_same_run(first: dict[str, Any], other: dict[str, Any], where: Path, there: Path) -> None:
    """RunsDifferError naming every result-changing difference between two runs' configs."""
    differences = result_changes(first, other)
    if differences:
        shown = "; ".join(_difference(change, where, there) for change in differences)
        raise RunsDifferError(RUNS_DIFFER.format(changes=shown))


def _difference(change: Change, where: Path, there: Path) -> str:
    return CHANGE.format(
        name=change.name, first=where, old=_short(change.old), other=there, new=_short(change.new)
    )


def _short(value: Any) -> str:
    """A setting's value as JSON on one line, cut to `SHOWN_CHARS`."""
    text = json.dumps(value, default=str, ensure_ascii=True)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def read_config(folder: Path) -> dict[str, Any]:
    """A run folder's config.json (InvalidInputError when missing, unreadable or not a run's)."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InvalidInputError(NO_CONFIG.format(path=path)) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(BAD_CONFIG.format(path=path, error=error)) from error
    if not isinstance(config, dict) or "benchmark" not in config:
        raise InvalidInputError(BAD_CONFIG.format(path=path, error="no benchmark named"))
    return config


def sha_note(config: Mapping[str, Any], quote: str = "") -> str:
    """` (sha256 0123…)`: the start of the dataset's hash, when the run recorded it."""
    digest = config.get("dataset_sha256")
    return f" (sha256 {quote}{str(digest)[:16]}…{quote})" if digest else ""


# --- pictures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    """A sample's image, downscaled for the page; boxes are drawn over it by the browser."""

    jpeg_base64: str
    size: tuple[int, int]
    """(width, height) of the thumbnail in pixels."""
    original_size: tuple[int, int]
    """(width, height) of the original image in pixels: the frame of the trace's boxes."""
    sha256: str = ""
    """SHA-256 (hex) of the image's bytes as read for the report."""
    note: str = ""
    """Why the trace's boxes are not drawn over it (the image changed since the run), or ""."""


@dataclass(frozen=True)
class NoThumbnail:
    """A sample whose image cannot be shown now (not an image any more, too large): its card
    says why, the rest of the report is unaffected."""

    note: str


Picture = Thumbnail | NoThumbnail


def sample_thumbnails(
    config: dict[str, Any], records: list[dict[str, Any]]
) -> Iterator[tuple[str, Picture]]:
    """(sample id, picture), in dataset order, for the samples in `records` whose data is still
    where the run read it. A picture that is no longer the run's image carries a note (and gets
    no boxes); one that cannot be read is a NoThumbnail: either costs that card only."""
    seen = {record["id"]: record for record in records}
    data = Path(config["data"])
    if not data.exists():
        return
    try:
        rows = list(load_samples(config["benchmark"], data))
    except ZoomRefineError:  # the data is no dataset any more: no pictures ("cannot be read")
        return
    for row in rows:
        if isinstance(row, Sample) and row.id in seen:
            yield row.id, sample_picture(row.image, seen[row.id])


def sample_picture(image: str | bytes, record: Mapping[str, Any]) -> Picture:
    """The thumbnail of one sample's image as it is now, checked against the run's record."""
    try:
        picture = thumbnail(image)
    except ZoomRefineError as error:  # not an image, too large, gone
        return NoThumbnail(IMAGE_UNREADABLE.format(reason=error))
    then = recorded_image_sha256(record)
    if then and then != picture.sha256:
        note = IMAGE_CHANGED.format(now=picture.sha256[:12], then=then[:12])
        return Thumbnail(picture.jpeg_base64, picture.size, picture.original_size, "", note)
    return picture


def recorded_image_sha256(record: Mapping[str, Any]) -> str:
    """The SHA-256 of the image a record's run saw: its `image_sha256`, or the `sha256:` image
    reference of an image stored in the dataset (`evals.records.image_reference`); "" when the
    record holds neither (a path-only record of an older run)."""
    digest = record.get("image_sha256")
    if isinstance(digest, str) and digest:
        return digest
    reference = record.get("image")
    if isinstance(reference, str) and reference.startswith("sha256:"):
        return reference.removeprefix("sha256:")
    return ""


def thumbnail(image: str | bytes) -> Thumbnail:
    """The image (a path or encoded bytes) downscaled to `THUMBNAIL_SIDE` (never enlarged), as a
    base64 JPEG, with the SHA-256 of the bytes read."""
    loaded = load_image(image)
    original = loaded.image
    scale = min(1.0, THUMBNAIL_SIDE / max(original.size))
    size = (max(1, round(original.width * scale)), max(1, round(original.height * scale)))
    small = original.resize(size) if scale < 1 else original
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=80)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumbnail(encoded, size, (original.width, original.height), loaded.sha256)


# --- records and values --------------------------------------------------------------------------


def changed_by_refinement(record: Mapping[str, Any]) -> bool:
    """A run that looked again (not the baseline) and ended on another answer than its first."""
    return (
        record.get("method") != BASELINE
        and record.get("status") == "ok"
        and record.get("initial_answer") != record.get("answer")
    )


def crop_views(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The views after the first (`img0`, the whole image): every crop shown, in order made."""
    return list((record.get("views") or [])[1:])


def plain(value: Any) -> str:
    """`value` as a reader wants it: None → "—", numbers short, lists comma-separated, mappings
    as `key value; …` — never a Python repr such as `['0']` or `None`."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{plain(key)} {plain(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(item) for item in value)
    return str(value)
