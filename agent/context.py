"""The runtime context: every knob of a run, with defaults that reproduce the paper.

Passed as `graph.invoke(inputs, context=ZoomContext(...))`. Environment variables never override
what a caller set here; the CLI reads the environment and fills these fields explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from zoom_refine.agent.families import processor_input_size
from zoom_refine.agent.prompts import PromptStyle
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.settings import ImageSettings

DEFAULT_MODEL = "hf:OpenGVLab/InternVL3-2B-hf"
MAX_HOPS_LIMIT = 8
MAX_REGIONS_LIMIT = 8

BoxFormat = Literal["auto", "norm1", "norm1000", "pixel"]
TileBudgetField = Literal["none", "transformers", "vllm"]
FamilySetting = Literal["auto", "internvl", "qwen2_5_vl", "qwen3_vl", "other"]


@dataclass(kw_only=True)
class ZoomContext(ImageSettings):
    """Settings of one Zoom-Refine run. Image and crop settings are inherited from ImageSettings."""

    model: str | BaseChatModel = DEFAULT_MODEL
    """A LangChain chat model, or a spec: `hf:<repo or path>`, `openai:<model>`, `provider:model`."""

    base_url: str | None = None
    """OpenAI-compatible server URL for `openai:` specs (vLLM, LMDeploy, `transformers serve`)."""

    box_format: BoxFormat = "auto"
    """Frame of the model's box numbers: `auto` detects it from the numbers (see
    `tools.boxes.detect_box_frame`); or force `norm1` (0–1), `norm1000`, `pixel` (of the view).
    A forced 0–1 or 0–1000 frame refuses numbers outside it: `norm1` reproduces the official code,
    which skips refinement when a model answers in 0–1000."""

    model_family: FamilySetting = "auto"
    """Box conventions of the model: `auto` reads a local model's config (and means `other` for
    servers); or name it: `internvl`, `qwen2_5_vl` (pixels of its resized input), `qwen3_vl`
    (0–1000), `other` (0–1 as asked)."""

    qwen_min_pixels: int = 3136
    """Qwen2.5-VL processor's `min_pixels`, to rebuild its resize for servers (local models report
    the size they used)."""

    qwen_max_pixels: int = 12_845_056
    """Qwen2.5-VL processor's `max_pixels` (the released checkpoints' setting), likewise."""

    accept_inverted_boxes: bool = True
    """Swap a box's inverted corners (x2 < x1 or y2 < y1). False refuses such boxes (no zoom),
    as the official code does."""

    prompt_style: PromptStyle = "paper"
    """`paper`: boxes asked as fractions 0–1; `internvl`: InternVL's `<box>[[…]]</box>` 0–1000."""

    max_hops: int = 1
    """Most crops per question. 1 = the paper (localize, crop, refine: two model calls)."""

    max_regions: int = 1
    """Most regions (boxes, hence crops) per localize step, 1..8. 1 = the paper: one box, and any
    further boxes in a reply are ignored. Above 1 (beyond the paper, for questions that compare
    distant objects) the prompt allows up to this many boxes, each becomes a crop (regions whose
    crops overlap heavily are merged first, see `region_merge_iou`), and refine sees every crop
    in the order given. Zooming again localizes inside the last crop of the hop."""

    region_merge_iou: float = 0.3
    """With `max_regions > 1`: two regions merge into their union when their crops (padded, in
    original pixels) have an IoU above this, or share at least half of the smaller crop
    (`tools.crop.merge_overlapping_pixel_boxes`)."""

    confidence_threshold: float = 0.7
    """After a refine, zoom again (if hops remain) when the stated confidence is below this.
    A reply with no confidence counts as sure (no further zoom)."""

    confidence_source: Literal["verbal", "token"] = "verbal"
    """Where confidence comes from: the number the model states (`verbal`), or the probability
    of the answer letter it wrote (`token`; needs a backend that returns logprobs: the local one,
    or a server that supports them; falls back to `verbal` when none come back)."""

    max_new_tokens: int = 512
    """Reply length limit for models loaded from a spec (ignored for a ready model object)."""

    max_patches: int | None = 12
    """Tile budget per image for InternVL loaded from an `hf:` spec: up to this many 448-px tiles
    plus a thumbnail (the paper's setting). None leaves the processor's default."""

    server_tile_budget: TileBudgetField = "none"
    """How to send `max_patches` to an OpenAI-compatible server with each request: `transformers`
    (`transformers serve`: `chat_template_kwargs.processor_kwargs.images_kwargs.max_patches`),
    `vllm` (`mm_processor_kwargs.max_dynamic_patch`, InternVL's vLLM processor), or `none`
    (the server's own setting; some servers reject unknown request fields)."""

    request_timeout: float = 120.0
    """Seconds before a request to a server (`openai:` specs) times out; the graph then retries
    transient failures (see `graphs.calls.MODEL_RETRY`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_format == "auto":
            self.image_format = "bmp" if _is_in_process(self.model) else "jpeg"
        if not 1 <= self.max_hops <= MAX_HOPS_LIMIT:
            raise InvalidInputError(
                f"max_hops must be within 1..{MAX_HOPS_LIMIT}, got {self.max_hops}"
            )
        if not 1 <= self.max_regions <= MAX_REGIONS_LIMIT:
            raise InvalidInputError(
                f"max_regions must be within 1..{MAX_REGIONS_LIMIT}, got {self.max_regions}"
            )
        if not 0.0 <= self.region_merge_iou <= 1.0:
            raise InvalidInputError(
                f"region_merge_iou must be within 0..1, got {self.region_merge_iou}"
            )
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise InvalidInputError(
                f"confidence_threshold must be within 0..1, got {self.confidence_threshold}"
            )

    def model_settings(self) -> dict[str, Any]:
        """What `agent.models.load_chat_model` takes besides a spec: the model's own settings."""
        return {
            "base_url": self.base_url,
            "max_new_tokens": self.max_new_tokens,
            "max_patches": self.max_patches,
            "request_timeout": self.request_timeout,
            "server_tile_budget": self.server_tile_budget,
        }

    def model_input_size(self, region_size: tuple[int, int]) -> tuple[int, int] | None:
        """The size the model's processor resizes an image of `region_size` to (see
        `ImageSettings.shown_size`). Loads nothing: an in-process model answers once it has been
        resolved and loaded (`graphs.calls.resolve_model`, before any view is made); for a
        server, derived from `model_family` and the settings we send or document (`max_patches`
        with a `server_tile_budget`, `qwen_min_pixels`/`qwen_max_pixels`)."""
        from zoom_refine.agent.local.model import LocalVisionChatModel
        from zoom_refine.agent.models import loaded_chat_model

        model = self.model
        if isinstance(model, str) and _is_in_process(model):
            model = loaded_chat_model(model, **self.model_settings()) or model
        if isinstance(model, LocalVisionChatModel):
            return model.input_size(region_size, load=False)
        if self.model_family == "auto" or _is_in_process(model):
            return None
        return processor_input_size(
            self.model_family,
            region_size,
            max_patches=self.max_patches if self.server_tile_budget != "none" else None,
            qwen_min_pixels=self.qwen_min_pixels,
            qwen_max_pixels=self.qwen_max_pixels,
        )

    def stop_reason(self, confidence: float | None, hop: int) -> str | None:
        """After refining on hop `hop`: None to zoom again, else why to stop (`confident`:
        no stated confidence counts as sure; `max_hops`)."""
        if confidence is None or confidence >= self.confidence_threshold:
            return "confident"
        return "max_hops" if hop >= self.max_hops else None

    @property
    def recursion_limit(self) -> int:
        """A LangGraph recursion limit that admits `max_hops` zooms and nothing more."""
        return 3 * self.max_hops + 4


def _is_in_process(model: str | BaseChatModel) -> bool:
    """Our local backend takes images in memory (no request body to keep small): lossless BMP."""
    from zoom_refine.agent.local.model import LocalVisionChatModel

    if isinstance(model, str):
        return model.startswith("hf:")
    return isinstance(model, LocalVisionChatModel)
