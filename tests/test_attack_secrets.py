"""A trace database's password is never shown (issue 21, item 1): in any connection-string form,
through the real CLI (`ask`, `eval`, `trace`), on success and on failure, it appears in no stdout,
no stderr and no file the command wrote (config.json, predictions, pictures, the report).

Failure paths reach nothing (a port nobody listens on, a malformed port, a key=value string);
success paths write into a real PostgreSQL server started here (`tests/postgres_server.py`; trust
authentication, so any password is accepted and must still be hidden)."""

from __future__ import annotations

import itertools
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import dataset_fixtures as fixtures
import pytest
from PIL import Image
from postgres_server import INSTALL_HINT, PostgresServer, postgres_server, server_binaries
from servers import free_port
from typer.testing import CliRunner

from zoom_refine.cli import app
from zoom_refine.graphs.trace_urls import describe_target, display_url, redact, url_secrets
from zoom_refine.testing import ScriptedVisionModel
from zoom_refine.tools.errors import InvalidInputError

runner = CliRunner()
PW = "Hunter2-S3cret"
"""The password every form carries; what must never be shown."""
ENCODED_PW = "Hunter2%2DS3cret%21"
"""A percent-encoded password (decoded: `Hunter2-S3cret!`)."""
LOCALIZE = "Answer: B\nBounding box: [0.6, 0.6, 0.7, 0.7]"
REFINE = "Rechecked Answer: A\nConfidence: 0.9"
_names = itertools.count()


def forms(host: str, port: int, db: str = "traces") -> dict[str, str]:
    """Every way a connection string may carry a password, pointing at `host:port/db`."""
    return {
        "userinfo": f"postgresql://zoom_refine:{PW}@{host}:{port}/{db}",
        "postgres-scheme": f"postgres://zoom_refine:{PW}@{host}:{port}/{db}",
        "query-password": f"postgresql://zoom_refine@{host}:{port}/{db}?password={PW}",
        "query-sslpassword": (
            f"postgresql://zoom_refine@{host}:{port}/{db}?sslmode=disable&sslpassword={PW}"
        ),
        "query-key-encoded": f"postgresql://zoom_refine@{host}:{port}/{db}?pass%77ord={PW}",
        "multi-host": f"postgresql://zoom_refine:{PW}@{host}:{port},{host}:{port}/{db}",
        "percent-encoded": f"postgresql://zoom_refine:{ENCODED_PW}@{host}:{port}/{db}",
    }


BROKEN = {
    "malformed-port": f"postgresql://zoom_refine:{PW}@127.0.0.1:notaport/traces",
    "multi-host-bad-port": f"postgresql://zoom_refine:{PW}@h1:p1,h2:p2/traces",
    "key-value": f"host=127.0.0.1 port=1 password={PW} dbname=traces",
    "key-value-quoted": f"host=127.0.0.1 password = '{PW} x' dbname=traces",
    "other-scheme": f"mysql://zoom_refine:{PW}@127.0.0.1/traces",
}
"""Strings that never reach a database."""


def leaked(text: str | bytes) -> list[str]:
    """Which spellings of the password `text` holds."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    spellings = [PW, ENCODED_PW, urllib.parse.unquote(ENCODED_PW)]
    return [spelling for spelling in spellings if spelling.encode() in data]


def written_leaks(folder: Path) -> dict[str, list[str]]:
    """Every file under `folder` that holds the password, and which spelling."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and (which := leaked(path.read_bytes())):
            found[str(path)] = which
    return found


def scene(path: Path) -> Path:
    image = Image.new("RGB", (400, 300), (128, 128, 128))
    image.paste((255, 0, 0), (240, 180, 280, 210))
    image.save(path)
    return path


def commands(work: Path, target: str) -> dict[str, list[str]]:
    image = scene(work / "scene.png")
    data = fixtures.write_hr_bench_tsv(work / "data")
    return {
        "ask": ["ask", str(image), "Colour?", "-o", "red", "-o", "blue", "--trace-db", target],
        "ask-saved": [
            "ask",
            str(image),
            "Colour?",
            "--trace-db",
            target,
            "--save-trace",
            str(work / "pictures"),
            "--json",
        ],
        "eval": [
            "eval",
            "hr-bench",
            "--data",
            str(data),
            "--out",
            str(work / "run"),
            "--limit",
            "2",
            "--trace-db",
            target,
        ],
        "trace": ["trace", target],
    }


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model spec resolves to an offline model that always localizes and refines."""

    def load(*args: object, **kwargs: object) -> object:
        return ScriptedVisionModel(replies=[LOCALIZE, REFINE] * 50)

    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", load)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if server_binaries() is None:
        pytest.skip(f"no PostgreSQL server binaries: {INSTALL_HINT}")
    with postgres_server() as server:
        yield server


# --- the one redaction function, over every form ------------------------------------------------


@pytest.mark.parametrize(
    "value", [*forms("db.example", 5432).values(), *BROKEN.values()], ids=[*forms("h", 1), *BROKEN]
)
def test_every_form_is_shown_without_its_password(value: str) -> None:
    shown = display_url(value)
    assert not leaked(shown), shown
    assert "***" in shown
    message = f"could not open {value!r}: {urllib.parse.unquote(value)} failed"
    assert not leaked(redact(message, value)), redact(message, value)
    assert url_secrets(value)  # the password was found, not merely missed
    try:
        assert not leaked(describe_target(value))
    except InvalidInputError as refused:  # other schemes, key=value strings
        assert not leaked(str(refused)), refused


def test_redaction_keeps_what_is_not_a_secret() -> None:
    url = "postgresql://me@db.example:5432/traces?sslmode=require&application_name=zr"
    assert display_url(url) == url
    assert display_url(f"postgresql://me:{PW}@h1:1,h2:2/db?password={PW}&sslmode=require") == (
        "postgresql://me:***@h1:1,h2:2/db?password=***&sslmode=require"
    )


# --- through the real CLI: failures -------------------------------------------------------------


@pytest.mark.reliability(
    "Security",
    "a trace-database password in any URL form, the database unreachable or the string malformed",
    "ask, eval and trace fail in one line; the password is in no output and no written file",
)
@pytest.mark.parametrize("name", [*forms("127.0.0.1", 1), *BROKEN])
def test_a_password_never_shows_when_the_database_cannot_be_used(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: None
) -> None:
    target = {**forms("127.0.0.1", free_port()), **BROKEN}[name]  # nothing listens there
    monkeypatch.chdir(tmp_path)
    for command, args in commands(tmp_path, target).items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (command, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, (command, result.stderr)
        assert not leaked(result.output), (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "run" / "config.json").exists()  # checked before anything is written
    assert written_leaks(tmp_path) == {}


# --- through the real CLI: success --------------------------------------------------------------


@pytest.mark.reliability(
    "Security",
    "a trace-database password in any URL form, the run succeeding",
    "`trace: thread … in URL`, the listing, config.json, predictions, pictures and the report "
    "hold no password",
)
@pytest.mark.parametrize("name", list(forms("h", 1)))
def test_a_password_never_shows_when_the_run_succeeds(
    name: str,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scripted: None,
) -> None:
    database = f"secrets_{os.getpid()}_{next(_names)}"
    postgres.create_database(database)
    target = forms(postgres.host, postgres.port, database)[name]
    monkeypatch.chdir(tmp_path)
    for command, args in commands(tmp_path, target).items():
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (command, result.output)
        assert not leaked(result.output), (command, result.output)
        if command == "ask":
            assert f"in {display_url(target)}" in result.stderr  # the success line, redacted
    report = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert report.exit_code == 0, report.output
    assert not leaked(report.output)
    assert (tmp_path / "run" / "config.json").is_file() and (tmp_path / "pictures").is_dir()
    assert written_leaks(tmp_path) == {}
