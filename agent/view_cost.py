"""What a view costs the model: the pixel size its processor works on, and its visual tokens.

Each model-call step records both for the view it looked at last (`view_size`, `visual_tokens`):
the size is the one the processor reported (local models), else the size it resizes the view to
by the family's known rule (servers), else the size we sent. Tokens follow the family's rule
(`agent.families.visual_tokens`), with a local model's own tile and token settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zoom_refine.agent.context import ZoomContext
from zoom_refine.agent.families import (
    BUDGET_STARVED,
    STARVED_LONG_SIDE,
    Family,
    starved_view,
)


def view_cost(
    shown_size: Sequence[int],
    *,
    processed_size: tuple[int, int] | None,
    family: Family,
    context: ZoomContext,
) -> dict[str, Any]:
    """The step fields `view_size` ([width, height] in pixels, as the processor works on it) and
    `visual_tokens` (None where the family's rule is unknown) of a view sent at `shown_size`."""
    width, height = shown_size  # [width, height] as a view record keeps it, or a tuple
    size = processed_size or context.model_input_size((width, height)) or (width, height)
    return {"view_size": list(size), "visual_tokens": context.visual_tokens(size, family)}


def budget_warning(result: Mapping[str, Any]) -> str | None:
    """The warning for a run whose first view is starved by its pixel budget (`BUDGET_STARVED`):
    read from its views (`img0` spans the original image) and its first step's `view_size`."""
    views, steps = result.get("views") or [], result.get("steps") or []
    first = next((step for step in steps if isinstance(step, Mapping)), None)
    if not views or first is None or not isinstance(first.get("view_size"), list):
        return None
    box = views[0].get("box") if isinstance(views[0], Mapping) else None
    if not isinstance(box, list) or len(box) != 4:
        return None
    image_size = (int(box[2] - box[0]), int(box[3] - box[1]))
    view_width, view_height = (int(side) for side in first["view_size"])
    if not starved_view(image_size, (view_width, view_height)):
        return None
    return BUDGET_STARVED.format(
        image_width=image_size[0],
        image_height=image_size[1],
        view_width=view_width,
        view_height=view_height,
        floor=STARVED_LONG_SIDE,
    )
