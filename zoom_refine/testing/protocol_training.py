"""Training the tiny models on their fixed replies: the conversations the real graph sends,
tokenized by the checkpoint's own processor exactly as the local backend does, labels on the
replies only, and one training loop (`fit_reply_windows`) for the protocol models here and the
tool-calling models (`tool_models`). Only the language model learns; the vision tower stays as
built.

Under sliding-window attention a reply depends only on its window (the end of the prompt before
it, never an image), so each step trains on the distinct reply windows (`reply_windows`), not
the 3,000-token conversations: the same gradients for every weight that gets one, a hundredth of
the cost. A decoder without a sliding window (Qwen3-VL's) trains on the whole conversations,
images included (`conversation_batches`). A model is kept only once greedy decoding of held-out
conversations reproduces every reply exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoom_refine.testing.protocol import (
    PROTOCOL_MAX_NEW_TOKENS,
    PROTOCOL_MAX_PATCHES,
    sample_conversations,
    sample_requests,
)
from zoom_refine.testing.protocol_families import (
    PROTOCOL_HELD_OUT,
    PROTOCOL_TRAIN_SAMPLES,
    TinyFamily,
)
from zoom_refine.testing.tiny_parts import CHAT_TOKENS, save_checkpoint

if TYPE_CHECKING:  # imported where used: `import zoom_refine.testing` stays free of torch
    import torch

PROTOCOL_WINDOW = 128
"""Sliding-window attention span (tokens) of the trained models' decoder layer. A reply then
depends only on itself and the last ~70 bytes of the prompt before it, never on an image or the
question, which makes the trained replies exactly image-independent. Large enough to tell the
three prompts apart (the localize and zoom-again prompts differ 60 tokens before the reply)."""

TRAIN_LR = 3e-3
TRAIN_MAX_STEPS = 600
TRAIN_CHECK_EVERY = 25
TRAIN_TARGET_LOSS = 0.01
TRAIN_SEED = 0

REPORT_FILE = "protocol_training.json"
"""Written last into a trained checkpoint: steps, seconds, final loss, cache key."""

Batch = dict[str, Any]
"""One training example: the model's keyword inputs (`input_ids`, `labels`, and for a whole
conversation its `pixel_values` and the like), each with a batch dimension of 1."""


def encode(
    processor: Any, conversation: list[Any], *, generation: bool, max_patches: int | None = None
) -> Any:
    """Tokenize an HF conversation as LocalVisionChatModel does (same processor kwargs):
    `max_patches` is InternVL's tile budget, left out when None."""
    processor_kwargs: dict[str, Any] = {}
    if max_patches is not None:
        processor_kwargs["images_kwargs"] = {"max_patches": max_patches}
    return processor.apply_chat_template(
        conversation,
        add_generation_prompt=generation,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs=processor_kwargs,
    )


def protocol_max_patches(family: TinyFamily) -> int | None:
    """The InternVL tile budget the protocol runs with; None for Qwen (no such knob)."""
    return PROTOCOL_MAX_PATCHES if family == "internvl3" else None


def assistant_labels(input_ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """Labels for the assistant replies only (their text and closing `<|im_end|>`), -100 elsewhere."""
    import torch

    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = tokenizer.encode("assistant\n", add_special_tokens=False)
    ids = input_ids[0].tolist()
    labels = torch.full_like(input_ids, -100)
    for index, token in enumerate(ids):
        first = index + 1 + len(header)
        if token == start and ids[index + 1 : first] == header:
            last = ids.index(end, first)
            labels[0, first : last + 1] = input_ids[0, first : last + 1]
    return labels


def greedy_reply(
    model: Any,
    processor: Any,
    conversation: list[Any],
    *,
    max_new_tokens: int = PROTOCOL_MAX_NEW_TOKENS,
    max_patches: int | None = None,
) -> str:
    """What the local backend would answer: greedy decoding of at most `max_new_tokens`."""
    import torch

    inputs = encode(processor, conversation, generation=True, max_patches=max_patches)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_ids = output[0, inputs["input_ids"].shape[1] :]
    return str(processor.decode(new_ids, skip_special_tokens=True))


@dataclass(frozen=True)
class TrainingReport:
    """What training a protocol model did (written into the checkpoint as `REPORT_FILE`)."""

    family: str
    steps: int
    seconds: float
    """Wall time of `train_protocol_model`: setup, training, the held-out check, saving."""
    final_loss: float
    windows: int
    """Distinct reply windows trained on (whole conversations when `sliding_window` is None)."""
    window_tokens: int
    """Tokens of those windows together (what one step runs)."""
    label_tokens: int
    """Reply tokens among them (with each reply's closing `<|im_end|>`)."""
    conversation_tokens: list[int]
    """Tokens of each full training conversation, image tokens included."""
    sliding_window: int | None = None
    """The decoder's attention span in tokens; None: full attention (trained on whole
    conversations)."""


def reply_windows(
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    window: int,
    *,
    image_ids: Collection[int] | None = None,
) -> list[torch.Tensor]:
    """For each labelled reply: the reply and the `window` + 8 tokens before it, as (2, n)
    tensors of ids and labels. With sliding-window attention over `window` tokens these are all
    the model sees when it writes the reply, so training on them is training on the whole
    conversation. Raises if a window reaches an image (its features would be missing in
    text-only training): a token of `image_ids`, or by default any token that is neither a byte
    nor a chat token."""
    import torch

    ids, marks = input_ids[0], labels[0]
    positions = (marks != -100).nonzero().flatten().tolist()
    spans: list[list[int]] = []
    for position in positions:
        if spans and position == spans[-1][-1] + 1:
            spans[-1].append(position)
        else:
            spans.append([position])
    pieces = []
    for span in spans:
        start = max(0, span[0] - window - 8)
        piece = torch.stack([ids[start : span[-1] + 1], marks[start : span[-1] + 1]])
        if not _plain_text(piece[0], image_ids):
            raise RuntimeError("a reply window reaches an image: the window is too wide")
        pieces.append(piece)
    return pieces


def _plain_text(ids: torch.Tensor, image_ids: Collection[int] | None) -> bool:
    """No token of `image_ids`; by default, only byte tokens (0..255) and chat tokens (numbered
    next, in every tiny tokenizer)."""
    if image_ids is not None:
        return not any(int(token) in image_ids for token in ids)
    return bool((ids < 256 + len(CHAT_TOKENS)).all())


def windows_loss(model: Any, batches: Sequence[Batch], *, train: bool) -> tuple[float, bool]:
    """Mean loss over `batches` (reply windows or whole conversations, `Batch`; backpropagated
    when `train`), and whether every labelled token is the model's argmax."""
    import torch

    total, exact = 0.0, True
    for batch in batches:
        with torch.set_grad_enabled(train):
            output = model(**batch)
        if train:
            (output.loss / len(batches)).backward()
        total += float(output.loss.detach()) / len(batches)
        predicted, target = output.logits[0, :-1].argmax(-1), batch["labels"][0, 1:]
        exact = exact and bool((predicted[target != -100] == target[target != -100]).all())
    return total, exact


def fit_reply_windows(
    model: Any,
    batches: Sequence[Batch],
    reproduces: Callable[[], bool],
    *,
    lr: float = TRAIN_LR,
    max_steps: int = TRAIN_MAX_STEPS,
) -> tuple[int | None, float]:
    """The one training loop of the tiny models: full-batch AdamW on `batches` (seeded; only the
    language model learns, `freeze_vision`) until the loss is under `TRAIN_TARGET_LOSS` with
    every reply token the argmax, then every `TRAIN_CHECK_EVERY` steps ask `reproduces()` (greedy
    decoding of held-out conversations, the model in eval mode). Returns (the step it learned
    at, or None after `max_steps`; the loss)."""
    import torch

    optimizer = torch.optim.AdamW(freeze_vision(model), lr=lr, weight_decay=0.0)
    loss, ready_at = float("inf"), None
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(TRAIN_SEED)
        model.train()
        for step in range(1, max_steps + 1):
            loss, exact = windows_loss(model, batches, train=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ready_at is None and exact and loss < TRAIN_TARGET_LOSS:
                ready_at = step
            if ready_at is not None and (step - ready_at) % TRAIN_CHECK_EVERY == 0:
                model.eval()
                if reproduces():
                    return step, loss
                model.train()
    return None, loss


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread while the block runs (restored after): the tiny models' matrices
    are too small to share out, several threads only wait for each other (several times slower
    on a busy machine), and one thread sums in one order everywhere."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def freeze_vision(model: Any) -> list[Any]:
    """Freeze every weight outside the language model and its output head (vision tower,
    projector) and return those two's: what training may change."""
    model.requires_grad_(False)
    model.model.language_model.requires_grad_(True)
    model.get_output_embeddings().requires_grad_(True)
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def load_for_training(base_dir: pathlib.Path) -> tuple[Any, Any]:
    """(processor, float32 model) of the checkpoint in `base_dir`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(base_dir)  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    return processor, model


def training_windows(
    processor: Any,
    conversations: Sequence[list[Any]],
    window: int,
    *,
    max_patches: int | None = None,
    image_ids: Collection[int] | None = None,
) -> tuple[list[Batch], list[int]]:
    """The distinct reply windows (`reply_windows`) of `conversations` (HF format, replies
    included), in order, each a `Batch` of ids and labels; and the token count of each whole
    conversation, image tokens included."""
    conversation_tokens, pieces = [], {}
    for conversation in conversations:
        encoded = encode(processor, conversation, generation=False, max_patches=max_patches)
        input_ids = encoded["input_ids"]
        labels = labelled(input_ids, processor.tokenizer)
        conversation_tokens.append(int(input_ids.shape[1]))
        for piece in reply_windows(input_ids, labels, window, image_ids=image_ids):
            pieces[tuple(piece.flatten().tolist())] = piece  # identical windows train once
    batches = [{"input_ids": piece[:1], "labels": piece[1:]} for piece in pieces.values()]
    return batches, conversation_tokens


def conversation_batches(
    processor: Any, conversations: Sequence[list[Any]], *, max_patches: int | None = None
) -> tuple[list[Batch], list[int]]:
    """Each of `conversations` (HF format, replies included) whole, as the processor encodes it
    (images included) with labels on the replies: what a decoder without a sliding window trains
    on; and the token count of each."""
    batches, conversation_tokens = [], []
    for conversation in conversations:
        encoded = dict(encode(processor, conversation, generation=False, max_patches=max_patches))
        encoded["labels"] = labelled(encoded["input_ids"], processor.tokenizer)
        batches.append(encoded)
        conversation_tokens.append(int(encoded["input_ids"].shape[1]))
    return batches, conversation_tokens


def labelled(input_ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """`assistant_labels`, refusing a conversation without a reply."""
    labels = assistant_labels(input_ids, tokenizer)
    if int((labels != -100).sum()) == 0:
        raise RuntimeError("no assistant reply found in the training conversation")
    return labels


def training_batches(
    processor: Any,
    model: Any,
    conversations: Sequence[list[Any]],
    *,
    max_patches: int | None = None,
    image_ids: Collection[int] | None = None,
) -> tuple[list[Batch], list[int], int | None]:
    """What `model` trains on: the reply windows of `conversations` under sliding-window
    attention, else the whole conversations; their token counts; the window (None: full)."""
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    if window:
        batches, tokens = training_windows(
            processor, conversations, window, max_patches=max_patches, image_ids=image_ids
        )
    else:
        batches, tokens = conversation_batches(processor, conversations, max_patches=max_patches)
    return batches, tokens, window


def train_protocol_model(
    base_dir: pathlib.Path,
    out_dir: pathlib.Path,
    family: TinyFamily,
    *,
    lr: float = TRAIN_LR,
    max_steps: int = TRAIN_MAX_STEPS,
) -> pathlib.Path:
    """Fine-tune the checkpoint in `base_dir` on the protocol and save it into `out_dir`.

    The data: the conversations the real graph sends for each of the family's training samples
    (`PROTOCOL_TRAIN_SAMPLES`, `protocol.sample_conversations`: the protocol's 4 turns, and the
    baseline's one where the family has a baseline reply), as reply windows when the decoder has
    a sliding window (built with `sliding_window=PROTOCOL_WINDOW`), else whole
    (`training_batches`). Full-batch AdamW until the loss is under `TRAIN_TARGET_LOSS` and every
    reply token is the argmax; then greedy decoding of every request of each held-out sample
    (`PROTOCOL_HELD_OUT`: other sizes, scenes and questions) must reproduce its reply exactly,
    else training goes on (checked every `TRAIN_CHECK_EVERY` steps) up to `max_steps`, after
    which it fails with RuntimeError.
    """
    from zoom_refine.agent.local.model import to_hf_conversation

    started = time.perf_counter()
    processor, model = load_for_training(base_dir)
    max_patches = protocol_max_patches(family)
    conversations = [
        to_hf_conversation(conversation)
        for sample in PROTOCOL_TRAIN_SAMPLES[family]
        for conversation in sample_conversations(family, sample)
    ]
    batches, conversation_tokens, window = training_batches(
        processor, model, conversations, max_patches=max_patches
    )
    held_out = [
        (to_hf_conversation(request), reply)
        for sample in PROTOCOL_HELD_OUT[family]
        for request, reply in sample_requests(family, sample)
    ]

    def reproduces() -> bool:
        return all(
            greedy_reply(model, processor, request, max_patches=max_patches) == reply
            for request, reply in held_out
        )

    step, loss_value = fit_reply_windows(model, batches, reproduces, lr=lr, max_steps=max_steps)
    if step is None:
        raise RuntimeError(
            f"tiny {family} did not learn the protocol in {max_steps} steps (loss {loss_value:.4f})"
        )
    model.eval()
    loss_value, _ = windows_loss(model, batches, train=False)
    save_checkpoint(out_dir, processor, model)
    report = TrainingReport(
        family=family,
        steps=step,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=loss_value,
        windows=len(batches),
        window_tokens=sum(int(batch["input_ids"].shape[1]) for batch in batches),
        label_tokens=sum(int((batch["labels"] != -100).sum()) for batch in batches),
        conversation_tokens=conversation_tokens,
        sliding_window=window,
    )
    write_report(out_dir, report)
    return pathlib.Path(out_dir)


def build_protocol_model(
    family: TinyFamily, scratch: pathlib.Path, build_base: Callable[[pathlib.Path], pathlib.Path]
) -> pathlib.Path:
    """Build the random checkpoint of `family` in `scratch` with `build_base` (the family's
    recipe: `build_protocol_base` of its module), train it on the protocol, and return the folder
    of the trained one (also in `scratch`)."""
    return train_protocol_model(build_base(scratch / "base"), scratch / "trained", family)


def write_report(out_dir: pathlib.Path, report: TrainingReport, **extra: Any) -> None:
    """Write `report` (and `extra` fields) as the checkpoint's `REPORT_FILE`."""
    data = dataclasses.asdict(report) | extra
    (out_dir / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")


def read_training_report(path: pathlib.Path) -> dict[str, Any]:
    """The report a trained checkpoint was saved with."""
    data: dict[str, Any] = json.loads((pathlib.Path(path) / REPORT_FILE).read_text())
    return data
