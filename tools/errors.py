"""Typed errors for bad *user* input.

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
