"""Key/value-cache reuse across turns of one conversation in the local backend.

The refine request is the localize request, the model's reply, and a new turn. Instead of
prefilling all of it again (the official code re-encodes the whole first image), we keep the
key/value cache of each finished generation, keyed by the token ids it covers, and let the next
request start from the longest common token prefix: only the new turn (the crop's tiles and the
refine text) is encoded and prefilled.

Token ids alone cannot tell two images apart (every image token has the same id), so matching
runs on a *key*: the ids with each image's run of placeholder tokens replaced by a fingerprint of
that image's pixels. Reuse never splits an image: a prefix that ends inside an image's placeholder tokens is shortened
to the image's start, so the suffix holds whole images and their pixel values can be sliced off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import xxhash

if TYPE_CHECKING:
    import torch


def common_prefix_length(first: torch.Tensor, second: torch.Tensor) -> int:
    """Number of leading positions where two 1-D token-id tensors agree."""
    length = min(first.shape[0], second.shape[0])
    if length == 0:
        return 0
    differ = (first[:length] != second[:length]).nonzero()
    return int(differ[0, 0]) if differ.numel() else length


def image_fingerprint(pixels: bytes) -> int:
    """A negative 63-bit id for an image's pixels (negative: never a real token id).

    xxh3 (GB/s) rather than a cryptographic hash: this guards against mix-ups, not attacks."""
    return -(xxhash.xxh3_64_intdigest(pixels) >> 1) - 1


def match_key(ids: torch.Tensor, image_token_id: int, fingerprints: Sequence[int]) -> torch.Tensor:
    """`ids` with the k-th run of image tokens replaced by `fingerprints[k]`, so two prompts match
    only where they hold the same images. Extra runs (no fingerprint) keep the plain id."""
    key = ids.clone()
    is_image = ids == image_token_id
    if not fingerprints or not bool(is_image.any()):
        return key
    previous = is_image.roll(1)
    previous[0] = False
    run = (is_image & ~previous).cumsum(0) - 1  # which run each image position is in
    known = is_image & (run < len(fingerprints))
    values = ids.new_tensor(list(fingerprints))
    key[known] = values[run[known]]
    return key


def back_off_image(ids: torch.Tensor, length: int, image_token_id: int) -> int:
    """Shorten a prefix `length` that ends inside a run of image tokens to the run's start."""
    if length == 0 or length >= ids.shape[0]:
        return length
    if int(ids[length]) != image_token_id or int(ids[length - 1]) != image_token_id:
        return length
    start = length
    while start > 0 and int(ids[start - 1]) == image_token_id:
        start -= 1
    return start


@dataclass
class CachedPrefix:
    """A key/value cache and the match key (see `match_key`) of the tokens it holds."""

    ids: torch.Tensor
    cache: Any


@dataclass
class PrefixCache:
    """A small LRU of finished generations' caches. `take` removes what it hands out: the caller
    extends that cache in place and `put`s it back under its longer ids."""

    capacity: int = 4
    _entries: OrderedDict[int, CachedPrefix] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_key: int = 0

    def take(self, ids: torch.Tensor, minimum: int = 1) -> tuple[CachedPrefix, int] | None:
        """The entry sharing the longest prefix with `ids` (at least `minimum` tokens), and that
        length; None when nothing matches."""
        with self._lock:
            best_key, best_length = None, minimum - 1
            for key, entry in self._entries.items():
                length = common_prefix_length(entry.ids, ids)
                if length > best_length:
                    best_key, best_length = key, length
            if best_key is None:
                return None
            return self._entries.pop(best_key), best_length

    def put(self, ids: torch.Tensor, cache: Any) -> None:
        """Keep `cache` (covering exactly `ids`), evicting the least recently stored beyond capacity."""
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[self._next_key] = CachedPrefix(ids=ids.detach().clone(), cache=cache)
            self._next_key += 1
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
