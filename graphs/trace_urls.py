"""What a `--trace-db` value names: a SQLite file, or a PostgreSQL database by URL.

Kept apart from `graphs.trace_postgres` so a path is told from a URL (and a wrong URL refused)
without psycopg installed. Also the one place that hides a database password before anything is
printed or written (`display_url`, `redact`): in the URL's user part (`user:PW@host`, also with
several hosts or a malformed port, percent-encoded or not), in a secret query parameter
(`?password=PW`, `sslpassword`, `oauth_client_secret`, the name percent-encoded or not), and in
libpq's key=value form (`host=h password=PW`), which is refused as a trace database.
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
SECRET_PARAMETERS = frozenset({"password", "sslpassword", "oauth_client_secret"})
"""libpq connection parameters whose value is a secret (lower case)."""
MASK = "***"
"""What a secret is shown as."""
SHORTEST_SCRUBBED = 4
"""Secrets shorter than this (characters) are not searched for in free text (replacing every `a`
of a message would garble it); they are still masked wherever a URL or key=value form holds them."""
UNSUPPORTED_URL = (
    "unsupported trace database {target!r}: give a SQLite file path or a Postgres URL "
    "(postgresql://user@host:port/db); {scheme}:// is not supported"
)
KEY_VALUE_DSN = (
    "unsupported trace database {target!r}: a key=value connection string; write it as a URL, "
    "postgresql://user@host:port/db (a password is best kept in ~/.pgpass or $PGPASSWORD)"
)
MISSING_DRIVER = (
    "a Postgres trace database needs psycopg and langgraph-checkpoint-postgres: "
    "pip install 'psycopg[binary]' langgraph-checkpoint-postgres"
)

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/+[^\s'\"<>]*")
"""A URL inside a message, up to whitespace or a quote."""
_SECRET_KEYWORD = "|".join(sorted(SECRET_PARAMETERS, key=len, reverse=True))
_KEY_VALUE_SECRET = re.compile(
    rf"(?<![\w?&%])({_SECRET_KEYWORD})(\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE
)
"""A secret in libpq's key=value form: `password=PW`, `password = 'P W'`."""
_KEY_VALUE_START = re.compile(r"^\s*[A-Za-z_]+\s*=")
"""A value that begins as a key=value connection string does (`host=…`)."""
_QUERY_PAIR = re.compile(r"([?&])([^=&#\s]*)=([^&#\s]*)")
"""One `key=value` of a URL's query."""

TraceTarget = str | Path
"""A trace database: a SQLite file path, or a `postgresql://` URL (a str: a Path would collapse
its `//`)."""


def trace_target(value: str | Path) -> TraceTarget:
    """`value` as a trace database: a Postgres URL (str) or a SQLite file path (Path). Any other
    URL scheme, or a key=value connection string, is an InvalidInputError (its password hidden),
    never a file under a folder named `mysql:` or a file named `host=h password=PW`."""
    text = str(value)
    match = URL_SCHEME.match(text)
    if match is None:
        if isinstance(value, str) and _is_key_value(text):
            raise InvalidInputError(KEY_VALUE_DSN.format(target=display_url(text)))
        return Path(value)
    scheme = match.group(1).lower()
    if scheme in POSTGRES_SCHEMES and text[len(scheme) + 1 : len(scheme) + 3] == "//":
        return text
    raise InvalidInputError(UNSUPPORTED_URL.format(target=display_url(text), scheme=scheme))


def display_url(url: str) -> str:
    """`url` (a whole connection URL, or a key=value connection string) safe to print: every
    password becomes `***`. Never parses strictly, so a malformed URL is hidden too."""
    match = URL_SCHEME.match(url)
    if match is None:
        return _KEY_VALUE_SECRET.sub(lambda found: found[1] + found[2] + MASK, url)
    return _masked_url(url)


def redact(text: str, *sources: str | Path | None) -> str:
    """`text` (any message) with every password hidden: in each URL or key=value secret it
    holds, and every secret of `sources` (the connection strings it may quote, in any form,
    percent-encoded or decoded) wherever it appears."""
    secrets: set[str] = set()
    for source in sources:
        if isinstance(source, str):
            secrets.update(url_secrets(source))
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= SHORTEST_SCRUBBED:
            text = text.replace(secret, MASK)
    text = _URL_IN_TEXT.sub(lambda found: _masked_url(found[0]), text)
    return _KEY_VALUE_SECRET.sub(lambda found: found[1] + found[2] + MASK, text)


def url_secrets(value: str) -> set[str]:
    """The secrets a connection URL or key=value string holds, as written and percent-decoded."""
    found: set[str] = set()
    if URL_SCHEME.match(value) is not None:
        user_part = _user_part(value)
        if user_part is not None:
            found.add(value[user_part[0] : user_part[1]])
        found.update(pair[3] for pair in _QUERY_PAIR.finditer(value) if _is_secret_key(pair[2]))
    found.update(pair[3].strip("'") for pair in _KEY_VALUE_SECRET.finditer(value))
    found |= {urllib.parse.unquote(secret) for secret in found}
    return {secret for secret in found if secret}


def describe_target(target: str | Path) -> str:
    """How messages name a trace database: its path, or its URL without the password."""
    found = trace_target(target)
    return display_url(found) if isinstance(found, str) else str(found)


def _is_key_value(text: str) -> bool:
    """Whether `text` reads as libpq's key=value form (every word `key=value`, a known word)."""
    return bool(_KEY_VALUE_START.match(text)) and bool(
        re.search(r"(?i)(?<![\w])(host|hostaddr|dbname|user|port|password|service)\s*=", text)
    )


def _user_part(url: str) -> tuple[int, int] | None:
    """Where the password of `url` lies (start, end), loosely: from the first `:` after the
    scheme's slashes to the last `@` (libpq and urllib disagree on odd URLs; hiding too much is
    the safe side), or None when there is no `user:…@`."""
    head = URL_SCHEME.match(url)
    if head is None:
        return None
    start = head.end()
    while start < len(url) and url[start] == "/":
        start += 1
    at = url.rfind("@", start)
    colon = url.find(":", start, at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def _masked_url(url: str) -> str:
    """`url` with its secret query parameters and the password of its user part masked."""
    url = _QUERY_PAIR.sub(
        lambda pair: pair[1] + pair[2] + "=" + (MASK if _is_secret_key(pair[2]) else pair[3]), url
    )
    user_part = _user_part(url)
    if user_part is None:
        return url
    return url[: user_part[0]] + MASK + url[user_part[1] :]


def _is_secret_key(key: str) -> bool:
    """Whether a query key names a secret parameter (libpq percent-decodes keys too)."""
    return urllib.parse.unquote(key).strip().lower() in SECRET_PARAMETERS
