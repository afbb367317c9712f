"""The runtime context: every knob of a run.

The defaults are the paper's method (localize on the whole image, one padded crop at full
resolution, refine; InternVL tiling, 12 tiles) with the official code's known faults fixed by name
and our own wording of the prompts: they do **not** reproduce the official numbers exactly.
`ZoomContext.official()` is the preset that does: every difference, its setting and the test
that pins it are in docs/fidelity.md.

Passed as `graph.invoke(inputs, context=ZoomContext(...))`. Environment variables never override
what a caller set here; the CLI reads the environment and fills these fields explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from zoom_refine.agent.families import processor_input_size
from zoom_refine.agent.parsing import ParserMode
from zoom_refine.agent.prompt_set import PromptSet, PromptSetSource, PromptStyle, load_prompt_set
from zoom_refine.agent.replicas import server_urls
from zoom_refine.agent.tool_conventions import ToolCallFormat, ToolConventionName, ToolImages
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.settings import ImageSettings

DEFAULT_MODEL = "hf:OpenGVLab/InternVL3-2B-hf"
MAX_HOPS_LIMIT = 8
MAX_REGIONS_LIMIT = 8

BoxFormat = Literal["auto", "norm1", "norm1000", "pixel"]
TileBudgetField = Literal["none", "transformers", "vllm"]
FamilySetting = Literal["auto", "internvl", "qwen2_5_vl", "qwen3_vl", "other"]
QuestionText = Literal["ours", "official"]
PADDED_TWICE = (
    "box_parser='official' pads each box itself, as the official code does (0.1 of the image "
    "side, then whole pixels outwards); set padding=0 so the crop is not padded twice"
)


@dataclass(kw_only=True)
class ZoomContext(ImageSettings):
    """Settings of one Zoom-Refine run. Image and crop settings are inherited from ImageSettings."""

    model: str | BaseChatModel = DEFAULT_MODEL
    """A LangChain chat model, or a spec: `hf:<repo or path>`, `openai:<model>`, `provider:model`."""

    base_url: str | Sequence[str] | None = None
    """OpenAI-compatible server URL for `openai:` specs (vLLM, LMDeploy, `transformers serve`),
    or several URLs: replicas of the same model, requests spread over them (`agent.replicas`).
    Several are kept as a tuple (a list is converted); a sequence of one is that URL."""

    box_format: BoxFormat = "auto"
    """Frame of the model's box numbers: `auto` detects it from the numbers (see
    `tools.boxes.detect_box_frame`); or force `norm1` (0–1), `norm1000`, `pixel` (of the view).
    A forced 0–1 or 0–1000 frame refuses numbers outside it. (The official parser is
    `box_parser="official"`: it clamps every number to 0–1, so a 0–1000 box such as
    `[0, 0, 500, 600]` becomes the whole image, and it does not read this field.)"""

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

    box_parser: ParserMode = "ours"
    """How boxes are read from a localize reply. `ours`: every labelled or bracketed box, its
    frame detected (`agent.regions`). `official`: the official parser: the last `Bounding box` /
    `bbox` labelled box, unsigned numbers clamped to 0–1, corners not in order → no zoom; its
    crop padded as the official `expand_bbox` (then `padding` must be 0)."""

    answer_parser: ParserMode = "ours"
    """How answer letters are read. `ours`: the last labelled answer, offered letters only
    (`agent.parsing.parse_choice`). `official`: the first `Answer:` (localize) or `Rechecked
    Answer:` (refine) letter, any of A–E (`agent.parsing.parse_official_choice`)."""

    question_text: QuestionText = "ours"
    """What `zoom-refine eval` passes as the question. `ours`: the benchmark's question, with its
    options passed apart (the prompt set lays them out). `official`: the benchmark's whole prompt
    (question, choices, instruction) as the official data conversion stored it, one phrase
    removed (`evals.prompts.official_question`); options still go with it, for the parsers."""

    keep_answer_on_refine_failure: bool = False
    """A refine call that raises (out of memory on the two-image call, a server error) keeps the
    first answer and ends the sample (stop reason `refine_failed`; the call is not retried, as the
    official code retries nothing), as the official code does (Base lines 523–533). User errors
    (`ZoomRefineError`) still fail the sample. False (ours): the sample is recorded as an error,
    so a failure is never mistaken for an answer the model re-checked."""

    reuse_prefix: bool = True
    """For `hf:` specs: refine reuses the localize call's key/value cache and encodes only the
    crop (same replies, less work). False re-encodes the whole conversation, as the official
    code does. Servers cache prefixes themselves; a ready model object keeps its own setting."""

    prompt_style: PromptStyle = "paper"
    """`paper`: boxes asked as fractions 0–1; `internvl`: InternVL's `<box>[[…]]</box>` 0–1000."""

    prompts: PromptSetSource = None
    """The prompt set every text the model is shown comes from: None = ours
    (`agent/prompt_sets/default.toml`), a path to a prompt-set TOML file (docs/prompts.md), or a
    loaded `PromptSet`. Read and checked when the context is made (a bad file, or a set lacking a
    template these settings need, is one InvalidInputError line); `prompt_set` is the loaded set."""

    max_hops: int = 1
    """Most crops per question. 1 = the paper (localize, crop, refine: two model calls). The
    model-driven graph (`graphs.agent`): most zoom tool calls per question, then one final turn
    without tools."""

    tool_convention: ToolConventionName = "crop"
    """Model-driven graph: which zoom tool the model is offered (`agent.tool_conventions`):
    `crop` (ours: image id, box, box_format), `qwen3_vl` (Qwen-Agent's `image_zoom_in_tool`,
    0–1000 of image `img_idx`), `deepeyes` (`bbox_2d` in pixels of the original as shown),
    `mini_o3` (`<grounding>`, 0–1 of `source`)."""

    tool_call_format: ToolCallFormat = "auto"
    """Model-driven graph: how tools are offered and calls arrive. `openai`: bound with
    `bind_tools` (the server renders them and parses calls: vLLM `--enable-auto-tool-choice
    --tool-call-parser hermes`); `text`: the tool's signature in the system turn and calls read
    from `<tool_call>` text (local `hf:` models, servers without a parser); `auto`: `text` for
    in-process models and chat models without `bind_tools`, else `openai`. Either way a reply
    with no parsed calls is searched for text calls."""

    tool_images: ToolImages = "user"
    """Model-driven graph, `openai` calls: where crop images go. `user`: tool results keep their
    text and the images follow in a user message (OpenAI's API and vLLM accept images only
    there, `agent.tool_images`); `tool`: inside the tool message."""

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

    always_zoom: bool = False
    """Zoom again after every refine until `max_hops`, whatever the confidence (the stop reason
    is then `max_hops`). For experiments: one such run records every hop's answer and confidence,
    so the outcome of any threshold and any hop limit ≤ `max_hops` can be replayed from it
    without another model call (`zoom-refine replay`, exact for deterministic decoding)."""

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
    `vllm` (`mm_processor_kwargs` with `max_patches`, read for InternVL `-hf` checkpoints, and
    `max_dynamic_patch`, read for the original InternVL format; the server needs
    `--trust-request-mm-kwargs`, see docs/vllm.md), or `none` (the server's own setting, e.g.
    vLLM's `--mm-processor-kwargs '{"max_patches": 6}'`; some servers reject unknown fields)."""

    request_timeout: float = 120.0
    """Seconds before a request to a server (`openai:` specs) times out; the graph then retries
    transient failures (see `graphs.calls.MODEL_RETRY`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.base_url = server_urls(self.base_url)
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
        if self.box_parser == "official" and self.padding != 0:
            raise InvalidInputError(PADDED_TWICE)
        self.prompts = load_prompt_set(self.prompts)
        self.prompts.check_usable(self.prompt_style, self.max_hops, self.max_regions)

    @property
    def prompt_set(self) -> PromptSet:
        """The loaded prompt set (`prompts`, loaded again if reassigned after construction)."""
        if not isinstance(self.prompts, PromptSet):
            self.prompts = load_prompt_set(self.prompts)
        return self.prompts

    @classmethod
    def official(cls, **overrides: Any) -> ZoomContext:
        """The official code's pipeline (`zoomrefine/ZoomRefine_Base.py`, the paper's runs),
        every behaviour as it does it: `OFFICIAL_SETTINGS` (docs/fidelity.md has one row per
        behaviour with the test that pins it). `overrides` replace any field. The prompts are
        ours unless you pass `prompts=` the set `zoom-refine prompts from-official` writes from
        your checkout of the official repository (we do not ship its wording)."""
        return cls(**{**OFFICIAL_SETTINGS, **overrides})

    def model_settings(self) -> dict[str, Any]:
        """What `agent.models.load_chat_model` takes besides a spec: the model's own settings."""
        return {
            "base_url": server_urls(self.base_url),  # a tuple when several (hashable)
            "max_new_tokens": self.max_new_tokens,
            "max_patches": self.max_patches,
            "request_timeout": self.request_timeout,
            "server_tile_budget": self.server_tile_budget,
            "reuse_prefix": self.reuse_prefix,
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

    def stop_reason(
        self, confidence: float | None, hop: int
    ) -> Literal["confident", "max_hops"] | None:
        """After refining on hop `hop`: None to zoom again, else why to stop (`confident`:
        no stated confidence counts as sure; `max_hops`). With `always_zoom`, only hops stop."""
        if self.always_zoom:
            return "max_hops" if hop >= self.max_hops else None
        if confidence is None or confidence >= self.confidence_threshold:
            return "confident"
        return "max_hops" if hop >= self.max_hops else None

    @property
    def recursion_limit(self) -> int:
        """A LangGraph recursion limit that admits `max_hops` zooms and nothing more."""
        return 3 * self.max_hops + 4


OFFICIAL_SETTINGS: dict[str, Any] = {
    "question_text": "official",
    "box_parser": "official",
    "answer_parser": "official",
    "accept_inverted_boxes": False,
    "box_format": "norm1",
    "prompt_style": "paper",
    "first_image": "official",
    "exact_preprocessing": True,
    "image_format": "jpeg",
    "jpeg_quality": 95,
    "padding": 0.0,
    "min_crop_side": 0,
    "max_new_tokens": 1024,
    "max_patches": 12,
    "max_hops": 1,
    "max_regions": 1,
    "reuse_prefix": False,
    "keep_answer_on_refine_failure": True,
}
"""`ZoomContext.official()`: the question as the official data conversion stored it; its box
parser (its padding included, so the crop planner adds none: `padding` 0) and answer parser;
inverted corners → no refine; its first-image step (the file, or a ≤ 4096 px JPEG) with the
processor tiling full-resolution images (12 tiles + thumbnail); crops as JPEG 95, no minimum
side; 1024 new tokens; one localize → crop → refine; no prefix reuse; a refine call that raises
keeps the first answer. The images are decoded as the official code decodes them (truncated files
read, no EXIF rotation, plain `convert("RGB")`: `tools.images.load_image(official=True)`, chosen
by `first_image="official"`)."""


def _is_in_process(model: str | BaseChatModel) -> bool:
    """Our local backend takes images in memory (no request body to keep small): lossless BMP."""
    from zoom_refine.agent.local.model import LocalVisionChatModel

    if isinstance(model, str):
        return model.startswith("hf:")
    return isinstance(model, LocalVisionChatModel)
