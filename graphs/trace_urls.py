"""What a `--trace-db` value names: a SQLite file, or a PostgreSQL database by URL.

Kept apart from `graphs.trace_postgres` so a path is told from a URL (and a wrong URL refused)
without psycopg installed.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from zoom_refine.tools.errors import InvalidInputError

POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
"""URL schemes of a Postgres trace database (libpq accepts both)."""
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")
"""A URL, or one a `Path` collapsed (`postgresql://h/db` → `postgresql:/h/db`); never a file
name anyone means (one-letter schemes are Windows drives, and are not matched)."""
UNSUPPORTED_URL = (
    "unsupported trace database {target!r}: give a SQLite file path or a Postgres URL "
    "(postgresql://user@host:port/db); {scheme}:// is not supported"
)
MISSING_DRIVER = (
    "a Postgres trace database needs psycopg and langgraph-checkpoint-postgres: "
    "pip install 'psycopg[binary]' langgraph-checkpoint-postgres"
)

TraceTarget = str | Path
"""A trace database: a SQLite file path, or a `postgresql://` URL (a str: a Path would collapse
its `//`)."""


def trace_target(value: str | Path) -> TraceTarget:
    """`value` as a trace database: a Postgres URL (str) or a SQLite file path (Path). Any other
    URL scheme is an InvalidInputError, never a file under a folder named `mysql:`."""
    text = str(value)
    match = URL_SCHEME.match(text)
    if match is None:
        return Path(value)
    scheme = match.group(1).lower()
    if scheme in POSTGRES_SCHEMES and text[len(scheme) + 1 : len(scheme) + 3] == "//":
        return text
    raise InvalidInputError(UNSUPPORTED_URL.format(target=display_url(text), scheme=scheme))


def display_url(url: str) -> str:
    """`url` safe to print: a password becomes `***`."""
    try:
        parts = urllib.parse.urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # a malformed port: nothing to parse a password from
        return url
    if password is None:
        return url
    user = urllib.parse.quote(parts.username or "", safe="")
    netloc = f"{user}:***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def describe_target(target: str | Path) -> str:
    """How messages name a trace database: its path, or its URL without the password."""
    found = trace_target(target)
    return display_url(found) if isinstance(found, str) else str(found)
