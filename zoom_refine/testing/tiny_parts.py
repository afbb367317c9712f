"""What every tiny checkpoint recipe shares (InternVL3, Qwen2.5-VL, Qwen3-VL): a byte-level
tokenizer, a tiny decoder's sizes, seeded construction, and saving model and processor.

torch, tokenizers and transformers are imported inside the functions, so importing this module
(and `zoom_refine.testing`) stays light.
"""

from __future__ import annotations

import pathlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer

CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""The first specials of every tiny tokenizer, numbered right after the 256 byte symbols."""

Model = TypeVar("Model")


def build_byte_level_tokenizer(
    specials: Sequence[str],
    chat_template: str,
    extra_special_tokens: dict[str, str] | None = None,
    model_max_length: int = 8192,
    merges: Sequence[tuple[str, str]] = (),
) -> Qwen2Tokenizer:
    """Qwen2 tokenizer over byte-level BPE plus `specials`, numbered after the 256 byte symbols
    in the order given; with no `merges` one token per byte, else each merge's token numbered
    after the specials (`learn_merges`)."""
    from tokenizers import AddedToken, pre_tokenizers  # a dependency of transformers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    vocab.update({token: len(alphabet) + index for index, token in enumerate(specials)})
    for first, second in merges:
        vocab.setdefault(first + second, len(vocab))
    options: dict[str, Any] = {"unk_token": None}
    if extra_special_tokens:
        options["extra_special_tokens"] = dict(extra_special_tokens)
    pairs: Any = [tuple(merge) for merge in merges]  # the stub says "a b" strings; tuples work
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=pairs,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=model_max_length,
        **options,
    )
    tokenizer.add_tokens([AddedToken(token, special=True) for token in specials])
    return tokenizer


def learn_merges(tokenizer: Any, texts: Iterable[str], count: int) -> list[tuple[str, str]]:
    """Up to `count` byte-pair merges learned from `texts` split by `tokenizer`'s own
    pre-tokenizer: each time the most frequent adjacent pair (ties: the smaller pair), so the
    same texts always give the same merges. A tokenizer with them writes English prompts in about
    a third of the tokens one per byte takes."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    words = Counter(piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(text))
    symbols = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, frequency in words.items():
            for pair in zip(symbols[word], symbols[word][1:], strict=False):
                pairs[pair] += frequency
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word in words:
            symbols[word] = _merged(symbols[word], best)
    return merges


def _merged(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """`symbols` with every adjacent `pair` joined, left to right."""
    out: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            out.append(pair[0] + pair[1])
            index += 2
        else:
            out.append(symbols[index])
            index += 1
    return out


def token_id(tokenizer: Any, token: str) -> int:
    """The id of `token`, which must be one token of `tokenizer`."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise TypeError(f"{token!r} is not one token: {found}")
    return found


def tiny_decoder(
    tokenizer: Any, *, max_position_embeddings: int, sliding_window: int | None = None
) -> dict[str, Any]:
    """The text decoder's settings every tiny model shares: one layer, width 64, 2 heads of 32
    (a head size vLLM's CPU attention supports), ending on `<|im_end|>`. `sliding_window`
    (tokens) turns the layer into sliding-window attention."""
    window: dict[str, Any] = {}
    if sliding_window is not None:
        window = {"use_sliding_window": True, "sliding_window": sliding_window}
        window |= {"max_window_layers": 0}  # from the first layer on
    return {
        **window,
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": max_position_embeddings,
        "bos_token_id": None,
        "eos_token_id": token_id(tokenizer, "<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }


def seeded_model(model_class: Callable[[Any], Model], config: Any, tokenizer: Any) -> Model:
    """`model_class(config)` with the weights of seed 0 (the caller's RNG left as it was), in
    eval mode, generating until `<|im_end|>` and padding with the tokenizer's pad token."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: Any = model_class(config)
    model.eval()
    model.generation_config.eos_token_id = token_id(tokenizer, "<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    result: Model = model
    return result


def save_checkpoint(out_dir: pathlib.Path, processor: Any, model: Any) -> pathlib.Path:
    """Save `model` and `processor` (tokenizer included) into `out_dir`, made if missing."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class TinyRecipe:
    """One tiny checkpoint family: how its tokenizer, its processor (from the tokenizer) and its
    model (from the tokenizer and an optional sliding window) are made. Called, it saves a
    random checkpoint: `recipe(out_dir, sliding_window=None)`."""

    name: str
    """The family, for people (`InternVL3-hf`, `Qwen2.5-VL`)."""
    tokenizer: Callable[[], Any]
    processor: Callable[[Any], Any]
    model: Callable[..., Any]
    """Called as `model(tokenizer, sliding_window=...)`: `sliding_window` in tokens, or None."""

    def __call__(self, out_dir: pathlib.Path, *, sliding_window: int | None = None) -> pathlib.Path:
        """Save a tiny random checkpoint (model, tokenizer, processor) into `out_dir`;
        `sliding_window` (tokens) turns the decoder layer into sliding-window attention."""
        tokenizer = self.tokenizer()
        model = self.model(tokenizer, sliding_window=sliding_window)
        return save_checkpoint(out_dir, self.processor(tokenizer), model)
