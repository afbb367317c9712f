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
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import BaseChatModel

from zoom_refine.agent.families import (
    QWEN_FACTORS,
    Family,
    processor_input_size,
    visual_tokens,
)
from zoom_refine.agent.parsing import ParserMode
from zoom_refine.agent.prompt_set import PromptSet, PromptSetSource, PromptStyle, load_prompt_set
from zoom_refine.agent.replicas import server_urls
from zoom_refine.agent.tool_conventions import ToolCallFormat, ToolConventionName, ToolImages
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.settings import ImageSettings

if TYPE_CHECKING:
    from zoom_refine.agent.local.model import LocalVisionChatModel

DEFAULT_MODEL = "hf:OpenGVLab/InternVL3-2B-hf"
BASE_URL_ENV = "ZOOM_REFINE_BASE_URL"
"""Where the CLI reads `base_url` when `--base-url` is not given (never read by this class)."""
MAX_HOPS_LIMIT = 8
MAX_REGIONS_LIMIT = 8

BoxFormat = Literal["auto", "norm1", "norm1000", "pixel"]
ToolConventionSetting = Literal["auto", "crop", "qwen3_vl", "deepeyes", "mini_o3"]
"""A tool convention (`ToolConventionName`, written out: Typer reads one flat Literal), or `auto`:
the one the model family was trained with (`resolved_convention`)."""
TileBudgetField = Literal["none", "transformers", "vllm"]
FamilySetting = Literal["auto", "internvl", "qwen2_5_vl", "qwen3_vl", "other"]
QuestionText = Literal["ours", "official"]
PADDED_TWICE = (
    "box_parser='official' pads each box itself, as the official code does (0.1 of the image "
    "side, then whole pixels outwards); set padding=0 so the crop is not padded twice"
)


@dataclass(kw_only=True)
class ZoomContext(ImageSettings):
    """Settings of one Zoom-Refine run; image and crop settings are inherited from ImageSettings.

    Each field is described once, in its `metadata["description"]`; the CLI's options
    (`metadata["cli"]`: which fields are options, and what the command line adds) and README's
    configuration table (`settings_table`) are made from it."""

    model: str | BaseChatModel = field(
        default=DEFAULT_MODEL,
        metadata={
            "description": "The chat model: a spec `hf:<repo or path>` (local transformers), "
            "`openai:<model>` (a server, see `base_url`) or `provider:model` (a LangChain "
            "provider); in Python also a chat model object.",
            "cli": {"type": str},
        },
    )
    base_url: str | Sequence[str] | None = field(
        default=None,
        metadata={
            "description": "OpenAI-compatible server URL for `openai:` specs (vLLM, LMDeploy, "
            "`transformers serve`), or several: replicas of the same model, requests spread over "
            "them and a server that fails taken out (see README, *Several servers*).",
            "cli": {
                "type": list[str] | None,
                "metavar": "URL",
                "suffix": f"Repeat it for several. Default: `${BASE_URL_ENV}` (several: "
                "separated by commas).",
            },
        },
    )
    box_format: BoxFormat = field(
        default="auto",
        metadata={
            "description": "Frame of the model's box numbers: `auto` detects 0–1, 0–1000 or "
            "pixels from the numbers (a 0–1 box overshooting by up to 0.1, e.g. `1.02`, is 0–1, "
            "clamped: `agent.regions`); or force `norm1` (0–1), `norm1000`, `pixel` (of the "
            "view), which refuse numbers outside their frame. The official parser "
            "(`box_parser`) clamps to 0–1 and ignores this.",
            "cli": {},
        },
    )
    model_family: FamilySetting = field(
        default="auto",
        metadata={
            "description": "Box conventions of the model: `auto` reads a local model's config "
            "(and means `other` for servers: set it for them); `internvl`, `qwen2_5_vl` (pixels "
            "of its resized input), `qwen3_vl` (0–1000), `other` (0–1 as asked).",
            "cli": {},
        },
    )
    qwen_min_pixels: int | None = field(
        default=None,
        metadata={
            "description": "Qwen pixel budget (Qwen2.5-VL, Qwen3-VL): the least pixels (a count, "
            "not a side) the processor resizes an image to. Given to `hf:` processors, sent to "
            "servers as `server_tile_budget` says, and used to rebuild a server's resize; "
            "`None` leaves the processor's own (servers: the released checkpoints', 3,136 for "
            "Qwen2.5-VL, 65,536 for Qwen3-VL).",
            "cli": {"flag": "--min-pixels", "type": int, "min": 1, "metavar": "PIXELS"},
        },
    )
    qwen_max_pixels: int | None = field(
        default=None,
        metadata={
            "description": "Qwen pixel budget: the most pixels the processor resizes an image "
            "to, the analogue of `max_patches` (each step records its view's size and visual "
            "tokens; a budget that leaves a large image's first view under 1,000 px on its "
            "long side is warned about). `None` leaves the processor's own (servers: "
            "12,845,056 for Qwen2.5-VL, 16,777,216 for Qwen3-VL).",
            "cli": {"flag": "--max-pixels", "type": int, "min": 1, "metavar": "PIXELS"},
        },
    )
    accept_inverted_boxes: bool = field(
        default=True,
        metadata={
            "description": "Swap a box's inverted corners (x2 < x1 or y2 < y1); `False` refuses "
            "such boxes (no zoom), as the official code does."
        },
    )
    box_parser: ParserMode = field(
        default="ours",
        metadata={
            "description": "How boxes are read from a localize reply. `ours`: every labelled or "
            "bracketed box, its frame detected (`agent.regions`). `official`: the official "
            "parser: the last `Bounding box` / `bbox` labelled box, unsigned numbers clamped to "
            "0–1, corners not in order → no zoom, its crop padded as the official `expand_bbox` "
            "(then `padding` must be 0)."
        },
    )
    answer_parser: ParserMode = field(
        default="ours",
        metadata={
            "description": "How answer letters are read. `ours`: the last labelled answer, "
            "offered letters only. `official`: the first `Answer:` (localize) or `Rechecked "
            "Answer:` (refine) letter, any of A–E."
        },
    )
    question_text: QuestionText = field(
        default="ours",
        metadata={
            "description": "What `zoom-refine eval` passes as the question. `ours`: the "
            "benchmark's question, its options passed apart (the prompt set lays them out). "
            "`official`: the benchmark's whole prompt (question, choices, instruction) as the "
            "official data conversion stored it, one phrase removed; options still go with it, "
            "for the parsers."
        },
    )
    keep_answer_on_refine_failure: bool = field(
        default=False,
        metadata={
            "description": "A refine call that raises (out of memory on the two-image call, a "
            "server error) keeps the first answer and ends the sample (stop reason "
            "`refine_failed`, not retried), as the official code does; user errors still fail "
            "the sample. `False` (ours) records the sample as an error, so a failure is never "
            "mistaken for a re-checked answer (the `official` preset sets `True`)."
        },
    )
    reuse_prefix: bool = field(
        default=True,
        metadata={
            "description": "`hf:` models: refine reuses the localize call's key/value cache and "
            "encodes only the crop (same replies, less work); `False` re-encodes the whole "
            "conversation, as the official code does. Servers cache prefixes themselves; a ready "
            "model object keeps its own setting."
        },
    )
    prompt_style: PromptStyle = field(
        default="paper",
        metadata={
            "description": "`paper`: boxes asked as fractions 0–1; `internvl`: InternVL's "
            "`<box>[[…]]</box>` in 0–1000.",
            "cli": {},
        },
    )
    prompts: PromptSetSource = field(
        default=None,
        metadata={
            "description": "The prompt set every text the model is shown comes from: `None` = "
            "ours (`agent/prompt_sets/default.toml`), a prompt-set TOML file (docs/prompts.md; "
            "`zoom-refine prompts from-official` writes one from the official code), or a loaded "
            "`PromptSet`. Checked when the context is made.",
            "cli": {"type": Path | None, "metavar": "FILE"},
        },
    )
    max_hops: int = field(
        default=1,
        metadata={
            "description": "Most crops per question; 1 = the paper (localize, crop, refine: two "
            "model calls). `--method agent`: most zoom tool calls per question, then one final "
            "turn without tools.",
            "range": (1, MAX_HOPS_LIMIT),
            "cli": {},
        },
    )
    tool_convention: ToolConventionSetting = field(
        default="auto",
        metadata={
            "description": "`--method agent`: the zoom tool offered: `auto` (`qwen3_vl` for "
            "Qwen3-VL checkpoints, the tool they were trained with; else `crop`), `crop` (ours: "
            "image id, box, box_format), `qwen3_vl` (Qwen-Agent's `image_zoom_in_tool`, 0–1000 "
            "of image `img_idx`, cropped as Qwen-Agent crops: no padding, small sides grown to "
            "32 px, resized to multiples of 32 px), `deepeyes` (`bbox_2d` in pixels of the original as shown), `mini_o3` "
            "(`<grounding>`, 0–1 of `source`); docs/agent.md.",
            "cli": {"panel": "agent"},
        },
    )
    tool_call_format: ToolCallFormat = field(
        default="auto",
        metadata={
            "description": "`--method agent`: how tools are offered and calls arrive. `openai`: "
            "bound with `bind_tools`, the server parses calls (vLLM `--enable-auto-tool-choice "
            "--tool-call-parser hermes`); `text`: the tool in the system turn, calls read from "
            "`<tool_call>` text; `auto`: for `hf:` models, the checkpoint's own chat template "
            "renders the tools when it has a tools section (as vLLM does; each step records "
            "`tool_prompt`), else `text`; `text` for chat models without `bind_tools`; else "
            "`openai`. A reply with no parsed calls is searched for text calls.",
            "cli": {"panel": "agent"},
        },
    )
    tool_images: ToolImages = field(
        default="user",
        metadata={
            "description": "`--method agent` with `openai` calls: where crop images go: `user`, "
            "in a user message after the tool result (OpenAI's API accepts images only there); "
            "`tool`, inside the tool message (vLLM 0.32 accepts both).",
            "cli": {"panel": "agent"},
        },
    )
    max_regions: int = field(
        default=1,
        metadata={
            "description": "Most boxes (hence crops) per localize step; 1 = the paper (one box; "
            "extra boxes ignored). Above 1: the prompt allows that many, crops that overlap "
            "heavily merge (`region_merge_iou`), refine sees every crop in order, and zooming "
            "again looks inside the last crop.",
            "range": (1, MAX_REGIONS_LIMIT),
            "cli": {},
        },
    )
    region_merge_iou: float = field(
        default=0.3,
        metadata={
            "description": "With `max_regions` above 1: two regions merge into their union when "
            "their padded crops (in original pixels) have an IoU above this, or share at least "
            "half of the smaller crop.",
            "range": (0.0, 1.0),
        },
    )
    confidence_threshold: float = field(
        default=0.7,
        metadata={
            "description": "After a refine, zoom again (if hops remain) while the stated "
            "confidence is below this; a reply with no confidence counts as sure.",
            "range": (0.0, 1.0),
            "cli": {},
        },
    )
    always_zoom: bool = field(
        default=False,
        metadata={
            "description": "Zoom again after every refine until `max_hops`, whatever the "
            "confidence: one run records every hop's answer and confidence, so any threshold "
            "and hop limit can be replayed from it without a model call (`zoom-refine replay`).",
            "cli": {},
        },
    )
    confidence_source: Literal["verbal", "token"] = field(
        default="verbal",
        metadata={
            "description": "Where confidence comes from: the number the model states (`verbal`), "
            "or the probability of the answer letter it wrote (`token`: the local backend, or a "
            "server that returns logprobs; `verbal` when none come back)."
        },
    )
    max_new_tokens: int = field(
        default=512,
        metadata={
            "description": "Reply length limit, in tokens, for models loaded from a spec "
            "(ignored for a ready model object)."
        },
    )
    max_patches: int | None = field(
        default=12,
        metadata={
            "description": "InternVL tile budget per image: up to this many 448-px tiles plus a "
            "thumbnail (the paper's setting), for `hf:` models, and for servers as "
            "`server_tile_budget` says; `None` (CLI: 0) leaves the processor's own setting.",
            "cli": {"type": int, "min": 0},
        },
    )
    server_tile_budget: TileBudgetField = field(
        default="none",
        metadata={
            "description": "How to send `max_patches` and the Qwen pixel budget "
            "(`qwen_min_pixels`, `qwen_max_pixels`) to a server with each request: "
            "`transformers` (`transformers serve`: `chat_template_kwargs.processor_kwargs`), "
            "`vllm` (`mm_processor_kwargs`; the server needs `--trust-request-mm-kwargs`, "
            "docs/vllm.md), or `none` (the server's own setting; some servers reject unknown "
            "fields).",
            "cli": {},
        },
    )
    request_timeout: float = field(
        default=120.0,
        metadata={
            "description": "Seconds before a request to a server (`openai:` specs) times out; "
            "timeouts, refused connections and 5xx are retried (3 attempts, backoff), then the "
            "sample fails.",
            "cli": {},
        },
    )

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
        for name in ("qwen_min_pixels", "qwen_max_pixels"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be a positive pixel count or None")
        low, high = self.qwen_min_pixels, self.qwen_max_pixels
        if low is not None and high is not None and low > high:
            raise InvalidInputError(
                f"qwen_min_pixels ({low:,}) must not exceed qwen_max_pixels ({high:,})"
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
            "min_pixels": self.qwen_min_pixels,
            "max_pixels": self.qwen_max_pixels,
        }

    def model_input_size(self, region_size: tuple[int, int]) -> tuple[int, int] | None:
        """The size the model's processor resizes an image of `region_size` to (see
        `ImageSettings.shown_size`). Loads nothing: an in-process model answers once it has been
        resolved and loaded (`graphs.calls.resolve_model`, before any view is made); for a
        server, derived from `model_family` and the settings we send or document (`max_patches`
        with a `server_tile_budget`, `qwen_min_pixels`/`qwen_max_pixels`)."""
        local = self._loaded_local_model()
        if local is not None:
            return local.input_size(region_size, load=False)
        if self.model_family == "auto" or _is_in_process(self.model):
            return None
        return processor_input_size(
            self.model_family,
            region_size,
            max_patches=self.max_patches if self.server_tile_budget != "none" else None,
            qwen_min_pixels=self.qwen_min_pixels,
            qwen_max_pixels=self.qwen_max_pixels,
        )

    def model_size_step(self) -> int:
        """Pixels the model's processor rounds each side to (see `ImageSettings.shown_size`):
        a loaded local model's own patch × merge size; for a server, the Qwen family's factor
        as `model_family` names it; 0 otherwise."""
        local = self._loaded_local_model()
        if local is not None:
            return local.size_step()
        if _is_in_process(self.model) or self.model_family == "auto":
            return 0
        return QWEN_FACTORS.get(self.model_family, 0)

    def visual_tokens(self, input_size: tuple[int, int], family: Family) -> int | None:
        """Visual tokens an image costs once the processor has made it `input_size` (pixels):
        a loaded local model counts with its own processor's settings; otherwise the rule of
        `family` (`agent.families.visual_tokens`)."""
        local = self._loaded_local_model()
        if local is not None:
            return local.visual_tokens(input_size)
        return visual_tokens(family, input_size)

    def _loaded_local_model(self) -> LocalVisionChatModel | None:
        """The in-process model this context names, if it is one and loaded (never loads)."""
        from zoom_refine.agent.local.model import LocalVisionChatModel
        from zoom_refine.agent.models import loaded_chat_model

        model = self.model
        if isinstance(model, str) and _is_in_process(model):
            model = loaded_chat_model(model, **self.model_settings()) or model
        return model if isinstance(model, LocalVisionChatModel) else None

    def resolved_family(self, model: BaseChatModel) -> Family:
        """The model family: as set (`model_family`), else read from a loaded local model's
        config (`other` for any other model)."""
        from zoom_refine.agent.local.model import LocalVisionChatModel

        if self.model_family != "auto":
            return self.model_family
        return model.family if isinstance(model, LocalVisionChatModel) else "other"

    def resolved_convention(self, model: BaseChatModel) -> ToolConventionName:
        """`tool_convention`, with `auto` resolved: `qwen3_vl` for the Qwen3-VL family, `crop`
        for every other."""
        if self.tool_convention != "auto":
            return self.tool_convention
        return "qwen3_vl" if self.resolved_family(model) == "qwen3_vl" else "crop"

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


def setting_fields() -> list[Field[Any]]:
    """ZoomContext's fields in the order they are documented: its own first, as declared, then
    the image settings it inherits."""
    inherited = {item.name for item in fields(ImageSettings)}
    every = fields(ZoomContext)
    return [item for item in every if item.name not in inherited] + [
        item for item in every if item.name in inherited
    ]


def range_text(bounds: tuple[float | None, float | None]) -> str:
    """A field's accepted range in words: `1..8`, `0..1`, `min 28`."""
    low, high = bounds
    if high is None:
        return f"min {low:g}"
    if low is None:
        return f"max {high:g}"
    return f"{low:g}..{high:g}"


def settings_table() -> str:
    """README's configuration table, one row per field: name, default (and accepted range), the
    field's description, and its command-line option when it has one."""
    rows = ["| field | default | what it controls |", "| --- | --- | --- |"]
    for item in setting_fields():
        default = item.default
        shown = f"`{default}`" if isinstance(default, str) else f"`{default!r}`"
        if "range" in item.metadata:
            shown += f" ({range_text(item.metadata['range'])})"
        text = item.metadata["description"]
        cli = item.metadata.get("cli")
        if cli is not None:
            flag = cli.get("flag") or f"--{item.name.replace('_', '-')}"
            text += f" CLI: `{flag}`."
            if cli.get("suffix"):
                text += f" {cli['suffix']}"
        rows.append(f"| `{item.name}` | {shown} | {text.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"
