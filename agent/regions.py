"""The one box reader: from a localize reply to regions in original-image pixels.

A model writes box numbers in some frame of the view it was shown (`tools.boxes`): 0–1 (the
paper's prompt), 0–1000 (InternVL's `<box>`, Qwen3-VL), or pixels (Qwen2.5-VL: pixels of the
image *its processor* resized the view to). `read_regions` decides each box's frame, converts it
**once** to original pixels, refuses what the settings refuse (with a reason), and merges regions
whose crops would overlap heavily. The graph passes the regions to the crop tool in the tool's
`original` frame, so nothing is converted twice.

Frame detection under `box_format="auto"` (`detect_box_frame`), given the frame the prompt asked
for (`expected_frame`):

1. Every value within ±(1 + `OVERSHOOT`) → 0–1, unless every value is an integer and the prompt
   asked for another frame (`[0, 0, 1, 1]` in 0–1000 is a 1-pixel box, `[0.1, …]` can only be 0–1).
   A 0–1 box is clamped to 0–1: real models overshoot the edge slightly (`[0.5, 0.5, 1.02, 0.9]`),
   and the official code clamps too. Without the margin, 1.02 read the whole box as 0–1000.
2. Else, when the prompt asked for pixels → pixels.
3. Else every value within ±1000 → 0–1000 (the official parser drops these; we read them).
4. Else → pixels of the view (no margin above 1000: a pixel box on a view wider than 1000 px is
   far more likely than a 0–1000 box past its edge).

A forced `box_format` (`norm1`, `norm1000`) refuses numbers outside its range instead, and
`accept_inverted_boxes=False` refuses swapped corners.

`box_parser="official"` (the `official` preset) reads as the official code does instead
(`ZoomRefine_Base.py` fc6c1ad, `parse_bbox` lines 190–219, `expand_bbox` 221–255,
`crop_image_from_bbox` 284–311): only the **last** `Bounding box` / `bbox` labelled box
(`parsing.parse_official_box`); corners not strictly ordered (x1 < x2, y1 < y2, before clamping)
→ no box, hence no second call; each value clamped to 0–1 whatever its size (so `[0, 0, 500, 600]`
is the whole image: there is no 0–1000 frame); a box empty after clamping → no box. The region is
the official crop itself: padded by `OFFICIAL_PADDING` in 0–1 of the image shown, rounded
outwards to whole pixels (`tools.official_image.official_crop_box`), so the crop planner must add
no padding of its own (`padding=0`, checked by the context). One box per reply, whatever
`max_regions` says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import ToolCall

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import Family, qwen_pixel_budget, qwen_resized_size
from zoom_refine.agent.parsing import RawBox, parse_boxes, parse_official_box
from zoom_refine.tools.boxes import BoxFrame, FloatBox, box_norm1_to_pixels, box_to_pixels
from zoom_refine.tools.crop import merge_overlapping_pixel_boxes
from zoom_refine.tools.crop_tool import CROP_TOOL_NAME
from zoom_refine.tools.official_image import OFFICIAL_PADDING, official_crop_box
from zoom_refine.tools.views import View, next_view_ids

NO_BOX = "no box in the reply: keeping the answer, no zoom"
INVERTED_BOX = "box corners inverted and accept_inverted_boxes is off: no zoom"
OUT_OF_RANGE = "box numbers outside the {frame} range (box_format is forced): no zoom"
OFFICIAL_NOT_ORDERED = "box corners not in order x1 < x2, y1 < y2 (official parser): no zoom"
OFFICIAL_EMPTY = "box empty once clamped to 0-1 (official parser): no zoom"
FRAME_LIMITS: dict[str, float] = {"norm1": 1.0, "norm1000": 1000.0}
"""The largest value of each normalized frame."""

OVERSHOOT = 0.1
"""How far past a normalized frame's edge (as a fraction of its range) a box may reach and still
be read in that frame, then clamped: 1.02 is a 0–1 box that overshot, not a 0–1000 one."""


@dataclass(frozen=True)
class BoxReading:
    """One box of a reply as read: the raw numbers, the frame, and the region or the refusal."""

    raw: RawBox
    """The four numbers exactly as written."""
    frame: BoxFrame | None
    """The frame they were read in; None when the box was refused."""
    frame_size: tuple[int, int] | None = None
    """(width, height) of the image a `pixel` box was drawn on (the processor's resized view)."""
    pixels: FloatBox | None = None
    """The region in original-image pixels (corners as the model gave them); None if refused."""
    note: str | None = None
    """Why the box was refused."""


@dataclass(frozen=True)
class Region:
    """A region to crop: its box in original pixels and the boxes (indices) it came from."""

    box: FloatBox
    """Original-image pixels: one box's corners as the model gave them, or a merged union."""
    members: tuple[int, ...]

    @property
    def ordered(self) -> FloatBox:
        """The box with its corners ordered (x1 ≤ x2, y1 ≤ y2), in original pixels."""
        x1, y1, x2, y2 = self.box
        return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


@dataclass(frozen=True)
class RegionRead:
    """Everything read from one localize reply: each box, and the regions to crop, in order."""

    boxes: list[BoxReading]
    regions: list[Region]

    @property
    def note(self) -> str | None:
        """Why nothing (or not everything) is cropped; None when every box became a region."""
        if not self.boxes:
            return NO_BOX
        refused = [(i, box.note) for i, box in enumerate(self.boxes) if box.note]
        if not refused:
            return None
        if len(self.boxes) == 1 or len(refused) == len(self.boxes):
            return refused[0][1]
        return "; ".join(f"box {i + 1}: {note}" for i, note in refused)

    def step_fields(self, *, several: bool) -> dict[str, Any]:
        """The localize step's box fields (`agent.state.StepRecord`): the first box as written
        and its frame; with several regions allowed, every box as written and the regions
        cropped (ordered corners, original pixels, to 0.01 px)."""
        first = self.boxes[0] if self.boxes else None
        fields: dict[str, Any] = {
            "box": list(first.raw) if first else None,
            "box_frame": first.frame if first else None,
            "frame_size": list(first.frame_size) if first and first.frame_size else None,
            "confidence": None,
            "note": self.note,
        }
        if several:
            fields["boxes"] = [list(box.raw) for box in self.boxes]
            fields["regions"] = [[round(v, 2) for v in region.ordered] for region in self.regions]
        return fields


def expected_frame(family: Family, asks_norm1000: bool) -> BoxFrame:
    """The frame to expect a box in, given the family and whether the prompt asked for 0–1000.

    Qwen models keep their native frame whatever the prompt says; others follow the prompt.
    """
    if family == "qwen2_5_vl":
        return "pixel"
    if family == "qwen3_vl" or asks_norm1000:
        return "norm1000"
    return "norm1"


def detect_box_frame(box: Sequence[float], expected: BoxFrame) -> BoxFrame:
    """The frame of a model's box from its numbers, given the frame the prompt asked for (the
    rule is in the module docstring)."""
    values = [abs(v) for v in box]
    if all(v <= 1.0 + OVERSHOOT for v in values):
        if expected != "norm1" and all(float(v).is_integer() for v in box):
            return expected
        return "norm1"
    if expected == "pixel":
        return "pixel"
    if all(v <= 1000.0 for v in values):
        return "norm1000"
    return "pixel"


def clamp_to_frame(box: Sequence[float], frame: BoxFrame) -> RawBox:
    """A normalized box with each value clamped to its frame's range; pixel boxes as they are
    (the crop planner clamps those to the image)."""
    limit = FRAME_LIMITS.get(frame)
    x1, y1, x2, y2 = (min(max(v, 0.0), limit) if limit is not None else v for v in box)
    return (x1, y1, x2, y2)


def read_regions(
    text: str,
    view: View,
    image_size: tuple[int, int],
    family: Family,
    context: ZoomContext,
    *,
    processed_size: tuple[int, int] | None = None,
) -> RegionRead:
    """The regions a reply marks on `view` (the image it was shown), in original pixels.

    At most `context.max_regions` boxes are read (the first ones, in `parse_boxes` order).
    `image_size` = (width, height) of the original image; `processed_size` = (width, height) the
    model's processor resized the view to, when the backend reported it (the frame of `pixel`
    boxes). Several accepted regions whose crops would overlap heavily are merged into their
    union (`merge_overlapping_pixel_boxes`, with the context's crop settings).
    """
    if context.box_parser == "official":
        return read_official_region(text, view)
    expected = expected_frame(family, context.prompt_style == "internvl")
    readings = [
        _read_box(box, expected, view, family, context, processed_size)
        for box in parse_boxes(text)[: context.max_regions]
    ]
    accepted = [(i, r.pixels) for i, r in enumerate(readings) if r.pixels is not None]
    regions = [Region(box, (i,)) for i, box in accepted]
    if len(regions) > 1:
        merged = merge_overlapping_pixel_boxes(
            [region.ordered for region in regions],
            view.box,
            image_size,
            context,
            context.region_merge_iou,
        )
        regions = [
            Region(
                item.box if len(item.members) > 1 else regions[item.members[0]].box,
                tuple(regions[m].members[0] for m in item.members),
            )
            for item in merged
        ]
    return RegionRead(boxes=readings, regions=regions)


def read_official_region(text: str, view: View) -> RegionRead:
    """The official parser's one region (module docstring): the reading keeps the clamped 0–1
    box mapped to original pixels; the region is the padded, whole-pixel official crop."""
    found = parse_official_box(text)
    if found is None:
        return RegionRead(boxes=[], regions=[])
    try:
        x1, y1, x2, y2 = (float(value) for value in found)
    except ValueError:  # "1.2.3": the official code gives up on the box (recorded as no box)
        return RegionRead(boxes=[], regions=[])
    raw: RawBox = (x1, y1, x2, y2)
    if not (x1 < x2 and y1 < y2):
        return RegionRead(
            boxes=[BoxReading(raw=raw, frame=None, note=OFFICIAL_NOT_ORDERED)], regions=[]
        )
    clamped = official_clamp(raw)
    if clamped is None:
        return RegionRead(boxes=[BoxReading(raw=raw, frame=None, note=OFFICIAL_EMPTY)], regions=[])
    pixels = box_norm1_to_pixels(clamped, view.box)
    crop = official_crop_box(clamped, view.box, OFFICIAL_PADDING)
    reading = BoxReading(raw=raw, frame="norm1", pixels=pixels)
    region = Region(
        box=(float(crop.x1), float(crop.y1), float(crop.x2), float(crop.y2)), members=(0,)
    )
    return RegionRead(boxes=[reading], regions=[region])


def official_clamp(box: RawBox) -> RawBox | None:
    """An ordered box with each value clamped to 0–1; a side that collapsed gets 1e-6 back
    (below 1), and a box still empty is None, as the official parser does."""
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box)
    if x1 >= x2:
        x2 = min(1.0, x1 + 1e-6)
    if y1 >= y2:
        y2 = min(1.0, y1 + 1e-6)
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def _read_box(
    raw: RawBox,
    expected: BoxFrame,
    view: View,
    family: Family,
    context: ZoomContext,
    processed_size: tuple[int, int] | None,
) -> BoxReading:
    """One box: its frame (or why it is refused) and its region in original pixels."""
    frame, refusal = _frame_of(raw, expected, context)
    if frame is None:
        return BoxReading(raw=raw, frame=None, note=refusal)
    if frame == "pixel":
        frame_size = pixel_frame_size(view, family, context, processed_size)
        pixels = box_to_pixels(raw, "pixel", view.box, frame_size)
        return BoxReading(raw=raw, frame=frame, frame_size=frame_size, pixels=pixels)
    box = clamp_to_frame(raw, frame) if context.box_format == "auto" else raw
    pixels = box_to_pixels(box, frame, view.box, view.shown_size)
    return BoxReading(raw=raw, frame=frame, pixels=pixels)


def _frame_of(
    raw: RawBox, expected: BoxFrame, context: ZoomContext
) -> tuple[BoxFrame | None, str | None]:
    """The frame to read `raw` in, or None and why the box is refused."""
    if not context.accept_inverted_boxes and (raw[2] < raw[0] or raw[3] < raw[1]):
        return None, INVERTED_BOX
    if context.box_format == "auto":
        return detect_box_frame(raw, expected), None
    limit = FRAME_LIMITS.get(context.box_format)
    if limit is not None and any(not 0 <= value <= limit for value in raw):
        return None, OUT_OF_RANGE.format(frame=context.box_format)
    return context.box_format, None


def pixel_frame_size(
    view: View,
    family: Family,
    context: ZoomContext,
    processed_size: tuple[int, int] | None,
) -> tuple[int, int]:
    """(width, height) of the image a pixel box was drawn on: the size the model's processor
    resized the view to (reported by local models, rebuilt for Qwen2.5-VL servers), else the
    size we showed it at (also when Qwen's rule refuses the view's shape). The one home of
    this rule: the agent graph's calls read `pixel` boxes through it too."""
    if processed_size is not None:
        return processed_size
    if family == "qwen2_5_vl":
        try:
            low, high = qwen_pixel_budget(family, context.qwen_min_pixels, context.qwen_max_pixels)
            return qwen_resized_size(view.shown_size, min_pixels=low, max_pixels=high)
        except ValueError:  # the processor refuses aspect ratios over 200: it never resized
            return view.shown_size
    return view.shown_size


def crop_tool_calls(
    read: RegionRead, view: View, hop: int, views: Sequence[Mapping[str, Any]]
) -> list[ToolCall]:
    """One `crop` tool call per region, in the tool's `original` frame (no second conversion).
    One region: id `crop-{hop+1}`, and the tool picks the next view id; several: ids
    `crop-{hop+1}-{k}` and distinct view ids (`next_view_ids` over the `views` registered), since
    they run in one ToolNode step against the same views."""
    base = {"image_id": view.id, "box_format": "original"}
    if len(read.regions) == 1:
        args = {**base, "box": list(read.regions[0].box)}
        return [ToolCall(name=CROP_TOOL_NAME, args=args, id=f"crop-{hop + 1}")]
    ids = next_view_ids(views, len(read.regions))
    return [
        ToolCall(
            name=CROP_TOOL_NAME,
            args={**base, "box": list(region.box), "view_id": view_id},
            id=f"crop-{hop + 1}-{k}",
        )
        for k, (region, view_id) in enumerate(zip(read.regions, ids, strict=True), start=1)
    ]
