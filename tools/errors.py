"""Typed errors for bad *user* input: every one of the package's errors, in this one module.

Each message says what is wrong and what to do; the CLI prints it on one line without a traceback.
Bad *model* output is never an error: it is handled and recorded in the trace.
"""

from __future__ import annotations


class ZoomRefineError(Exception):
    """Base class for errors a user can fix (bad file, bad option, unreachable server)."""


class ImageLoadError(ZoomRefineError):
    """The image could not be read or decoded."""


class ImageTooLargeError(ImageLoadError):
    """The image declares more pixels than the configured limit (a decompression-bomb guard)."""


class InvalidInputError(ZoomRefineError, ValueError):
    """A question, option list or setting is malformed."""


class ModelOutOfMemoryError(ZoomRefineError):
    """The local model ran out of memory on this input, even alone and with every cache dropped.

    A per-sample failure, not a crash: the eval runner records it and goes on. Never retried by
    the graph's `MODEL_RETRY` (it is not transient: the same input needs the same memory)."""


class AllReplicasDownError(ZoomRefineError, ConnectionError):
    """Every replica is out of service; the message names each server and why. A
    `ConnectionError`, so `graphs.calls.is_transient_model_error` retries it."""


class ImageChangedError(ZoomRefineError):
    """A persisted run's input image is gone or is no longer the image the run saw (its bytes'
    SHA-256 differs from the state's `image_sha256`): its boxes cannot be drawn on it."""


class NotReplayableError(ZoomRefineError):
    """The run cannot be replayed (not made with `--always-zoom`): one line, exit 2."""


class RunSettingsChangedError(ZoomRefineError):
    """A resume whose result-changing settings differ from the run folder's config.json (the CLI
    prints the message, one line, and exits with 2). Nothing was written."""


class GridTooLargeError(ZoomRefineError):
    """A grid of more than `MAX_CELLS` cells without `--yes` (CLI: one line, exit 2)."""


class OfficialCheckoutError(InvalidInputError):
    """The named checkout lacks a file or function the verifier needs, or is unsafe to read."""


class RunFolderBusyError(ZoomRefineError):
    """Another writer holds the run folder (the CLI prints the message and exits with 2)."""


class RunsDifferError(InvalidInputError):
    """`report A B` over runs made with other result-changing settings, another model or another
    benchmark (they are no shards of one run); the message names each difference, one line."""


class StorageError(ZoomRefineError):
    """A run file could not be written for lack of room. Not a sample's failure: it stops the run,
    with one line naming the file (the CLI prints it and exits non-zero)."""
