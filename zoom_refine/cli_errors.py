"""User errors on the command line: checked early, translated into one line, printed without a
traceback, exit status 2.

The checks run before a model loads or anything is written (a model spec that cannot work, a
trace database that cannot be opened); the translations turn the few library failures a user can
fix (an unreachable server, a full disk, a lost database) into one line that says what to do.
Anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape

from zoom_refine.agent import models
from zoom_refine.agent.context import ZoomContext
from zoom_refine.cli_render import err, printable

EXIT_USER_ERROR = 2
SERVER_UNREACHABLE = (
    "cannot reach the model server at {url}: {reason} (is it running? check --base-url)"
)
MODEL_UNAVAILABLE = "cannot load model {spec!r}: {reason}"
DISK_FULL = "cannot write {where}: {reason}; make room (or lift the limit) and run it again"
TRACE_DB_UNREACHABLE = "the trace database {url} became unreachable ({reason})"
TRACE_DB_FAILED = "the trace database {url} failed ({reason})"
EVAL_RESUMABLE = (
    "; the run stopped, and the predictions written so far are intact: when the database is "
    "back, run the same command again to resume"
)
HUB_OFFLINE = (
    "[dim]the Hugging Face hub cannot be reached: using the cached weights of {model} offline[/dim]"
)

_secret_sources: set[str] = set()
"""Connection strings given on this command line (`--trace-db`, `trace DB`): no message printed
through `fail` holds a password of theirs, whatever formed it."""


def fail(message: str) -> NoReturn:
    """Print `message` as one `error:` line on stderr (passwords hidden) and exit with 2."""
    from zoom_refine.graphs.trace_urls import redact

    message = printable(redact(message, *_secret_sources))
    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(EXIT_USER_ERROR)


def check_trace_db(value: str | None) -> str | Path | None:
    """`--trace-db` as a SQLite path or a Postgres URL; any other URL is refused here, in one
    line, before a model loads (`graphs.trace_urls.trace_target`). Its password, if any, is
    hidden from every error message from now on (`fail`)."""
    from zoom_refine.graphs.trace_urls import trace_target

    if value is None:
        return None
    _secret_sources.add(value)
    return trace_target(value)


def check_trace_writable(target: str | Path | None) -> None:
    """Open a Postgres trace database for writing once and close it, before a model loads, the
    run folder is locked or config.json written: an unreachable database, or one that refuses
    the user its tables, stops the run here with one line and nothing written. (A SQLite file is
    made by the run itself, in a folder it creates.)"""
    if not isinstance(target, str):
        return
    from zoom_refine.graphs.traces import open_saver

    with open_saver(target, create=True):
        pass


def check_model(context: ZoomContext) -> None:
    """Resolve the context's model spec now, before the graph runs or a progress bar starts: a
    spec that cannot work (unknown provider, missing package or key, weights neither cached nor
    downloadable) stops here with one line (`agent.models.check_model_spec`, run by
    `load_chat_model`). An `hf:` model's weights still load on its first call; when the hub
    cannot be reached but the weights are cached, they are used offline (said on stderr)."""
    if not isinstance(context.model, str):
        return
    from huggingface_hub import constants

    was_offline = constants.HF_HUB_OFFLINE
    models.load_chat_model(context.model, **context.model_settings())
    if constants.HF_HUB_OFFLINE and not was_offline:
        err.print(HUB_OFFLINE.format(model=escape(context.model)), soft_wrap=True)


def user_message(error: Exception, context: ZoomContext) -> str | None:
    """A one-line explanation for errors caused by the environment, or None for our own bugs."""
    import httpx
    import openai

    if isinstance(error, (openai.APIConnectionError, httpx.ConnectError, ConnectionError)):
        urls = context.base_url
        url = ", ".join(urls) if urls and not isinstance(urls, str) else urls
        return SERVER_UNREACHABLE.format(url=url or "the default URL", reason=error)
    if isinstance(error, openai.APIStatusError):
        return f"the model server refused the request: {error}"
    from zoom_refine.evals.store import FULL_DISK_REASONS

    if isinstance(error, OSError) and error.errno in FULL_DISK_REASONS:  # not the model's fault
        where = error.filename or "a file"
        return DISK_FULL.format(where=where, reason=FULL_DISK_REASONS[error.errno or 0])
    if isinstance(error, OSError) and str(context.model).startswith("hf:"):
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return MODEL_UNAVAILABLE.format(spec=context.model, reason=first_line)
    return None


def trace_db_message(error: BaseException, trace_db: str | Path | None) -> str | None:
    """One line for a Postgres trace database failing mid-run (stopped, restarted, refusing):
    it became unreachable, or failed; None for any other error. Its password is hidden."""
    if not isinstance(trace_db, str):
        return None
    try:
        import psycopg
    except ImportError:
        return None
    if not isinstance(error, psycopg.Error):
        return None
    from zoom_refine.graphs.trace_postgres import error_reason
    from zoom_refine.graphs.trace_urls import display_url

    lost = isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
    template = TRACE_DB_UNREACHABLE if lost else TRACE_DB_FAILED
    return template.format(url=display_url(trace_db), reason=error_reason(error, trace_db))
