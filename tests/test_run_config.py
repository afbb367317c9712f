"""A resume into a run folder made with other settings: refused before anything is written, unless
`--resume-anyway`, which keeps the earlier settings in config.json (`evals.run_config`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import dataset_fixtures as fixtures
import pytest
from typer.testing import CliRunner

from zoom_refine import ZoomContext
from zoom_refine.cli import app
from zoom_refine.evals.run_config import (
    RESULT_NEUTRAL_SETTINGS,
    agent_only_settings,
    resumed_config,
    settings,
)
from zoom_refine.evals.runner import EvalPlan, run_config, run_eval
from zoom_refine.testing import RuleVisionModel, ScriptedVisionModel
from zoom_refine.tools.errors import RunSettingsChangedError

runner = CliRunner()


@pytest.fixture
def hr_bench(tmp_path: Path) -> Path:
    """The shared 6-row HR-Bench fixture (row 4 is malformed: a counted bad row)."""
    return fixtures.write_hr_bench_tsv(tmp_path / "data")


@pytest.fixture
def any_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model spec resolves to a scripted model (patched where the spec is resolved), so
    `--model openai:first` and `--model openai:second` are two models by name, offline."""
    model = RuleVisionModel()
    monkeypatch.setattr("zoom_refine.agent.models.load_chat_model", lambda *a, **k: model)


def evaluate(data: Path, out: Path, model: str, *extra: str) -> Any:
    args = ["eval", "hr-bench", "--data", str(data), "--out", str(out), "--model", model, *extra]
    return runner.invoke(app, args)


def files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("predictions.jsonl", "config.json")}


def config(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "config.json").read_text())
    return loaded


def ids(out: Path) -> list[str]:
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line)["id"] for line in lines]


@pytest.mark.reliability(
    "Records",
    "`zoom-refine eval` run again on a partly done `--out` with another `--model`",
    "refused before it writes anything: exit 2, one line naming `model` old → new and the ways "
    "on (a new --out, --resume-anyway); predictions.jsonl and config.json byte for byte as they "
    "were",
)
def test_another_model_is_refused_and_nothing_is_written(
    tmp_path: Path, hr_bench: Path, any_model: None
) -> None:
    out = tmp_path / "run"
    first = evaluate(hr_bench, out, "openai:first", "--limit", "3")
    assert first.exit_code == 0, first.output
    before = files(out)

    second = evaluate(hr_bench, out, "openai:second")
    assert second.exit_code == 2, second.output
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"error: run folder {out} holds predictions made with other settings")
    assert 'model "openai:first" → "openai:second"' in line
    assert "--out" in line and "--resume-anyway" in line
    assert "max_hops" not in line and "limit" not in line  # only what differs and matters
    assert files(out) == before


@pytest.mark.reliability(
    "Records",
    "`run_eval` into a folder made by another model object (with --retry-errors, and a torn "
    "last line left by a killed run)",
    "RunSettingsChangedError naming `model` before the store is opened: the torn tail is not "
    "repaired, no error record dropped, config.json and summary.json untouched",
)
def test_another_model_object_is_refused_before_the_store_is_opened(
    tmp_path: Path, hr_bench: Path
) -> None:
    out = tmp_path / "run"
    plan = EvalPlan(benchmark="hr-bench", data=hr_bench, out=out, limit=2)
    run_eval(plan, ZoomContext(model=RuleVisionModel()))
    torn = (out / "predictions.jsonl").read_bytes() + b'{"id": "9", "method": "zoom-ref'
    (out / "predictions.jsonl").write_bytes(torn)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}

    retry = EvalPlan(benchmark="hr-bench", data=hr_bench, out=out, retry_errors=True)
    other = ScriptedVisionModel(replies=["A"])
    with pytest.raises(RunSettingsChangedError, match=r'model "RuleVisionModel" → "Scripted'):
        run_eval(retry, ZoomContext(model=other))
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


@pytest.mark.reliability(
    "Records",
    "`zoom-refine eval` run again on its `--out` with another `--max-hops`",
    "refused with one line naming `max_hops 1 → 2`; nothing written",
)
def test_another_max_hops_is_refused(tmp_path: Path, hr_bench: Path, any_model: None) -> None:
    out = tmp_path / "run"
    assert evaluate(hr_bench, out, "openai:m", "--limit", "2").exit_code == 0
    before = files(out)
    result = evaluate(hr_bench, out, "openai:m", "--max-hops", "2")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "other settings: max_hops 1 → 2; use a new --out" in line
    assert files(out) == before


@pytest.mark.reliability(
    "Records",
    "`zoom-refine eval` resumed with another `--concurrency`, `--limit` and `--request-timeout` "
    "(result-neutral settings)",
    "allowed: the run finishes the samples left, the earlier lines kept byte for byte, and "
    "config.json holds the new settings with the earlier config in `previous_configs`",
)
def test_result_neutral_settings_may_differ(
    tmp_path: Path, hr_bench: Path, any_model: None
) -> None:
    out = tmp_path / "run"
    assert evaluate(hr_bench, out, "openai:m", "--limit", "2").exit_code == 0
    kept = (out / "predictions.jsonl").read_bytes()
    extra = ("--limit", "4", "--concurrency", "3", "--request-timeout", "30")
    result = evaluate(hr_bench, out, "openai:m", *extra)
    assert result.exit_code == 0, result.output
    assert (out / "predictions.jsonl").read_bytes().startswith(kept)
    assert sorted(ids(out)) == ["0", "1", "2", "3"]
    written = config(out)
    assert written["limit"] == 4 and written["context"]["request_timeout"] == 30
    (earlier,) = written["previous_configs"]
    assert earlier["limit"] == 2 and earlier["context"]["request_timeout"] == 120
    assert "previous_configs" not in earlier


@pytest.mark.reliability(
    "Records",
    "`zoom-refine eval --resume-anyway` on an `--out` made by another model",
    "allowed: the new model's predictions are added to the old ones; config.json names the new "
    "model and keeps the old config (model and all) in `previous_configs`, oldest first",
)
def test_resume_anyway_records_every_config(
    tmp_path: Path, hr_bench: Path, any_model: None
) -> None:
    out = tmp_path / "run"
    assert evaluate(hr_bench, out, "openai:first", "--limit", "2").exit_code == 0
    kept = (out / "predictions.jsonl").read_bytes()
    result = evaluate(hr_bench, out, "openai:second", "--limit", "3", "--resume-anyway")
    assert result.exit_code == 0, result.output
    result = evaluate(hr_bench, out, "openai:third", "--max-hops", "2", "--resume-anyway")
    assert result.exit_code == 0, result.output
    assert (out / "predictions.jsonl").read_bytes().startswith(kept)
    assert sorted(ids(out)) == ["0", "1", "2", "3", "4", "5"]
    written = config(out)
    assert written["model"] == "openai:third" and written["context"]["max_hops"] == 2
    history = written["previous_configs"]
    assert [entry["model"] for entry in history] == ["openai:first", "openai:second"]
    assert [entry["limit"] for entry in history] == [2, 3]


@pytest.mark.reliability(
    "Records",
    "`zoom-refine eval` run again on its `--out` with the very same settings",
    "resumes as before: finished samples are skipped (the model is never called), "
    "predictions.jsonl and config.json byte for byte as they were, no `previous_configs`",
)
def test_the_same_settings_resume_as_before(tmp_path: Path, hr_bench: Path) -> None:
    out = tmp_path / "run"
    plan = EvalPlan(benchmark="hr-bench", data=hr_bench, out=out, bad_rows="skip")
    run_eval(plan, ZoomContext(model=RuleVisionModel(), max_hops=2))
    before = files(out)
    quiet = RuleVisionModel(fail_on="this model must not be called")
    again = EvalPlan(benchmark="hr-bench", data=hr_bench, out=out, bad_rows="skip", concurrency=4)
    run_eval(again, ZoomContext(model=quiet, max_hops=2))
    assert files(out) == before
    written = config(out)
    assert written["bad_rows"] == "skip" and "previous_configs" not in written
    with pytest.raises(RunSettingsChangedError, match=r'bad_rows "skip" → "wrong"'):
        run_eval(EvalPlan(benchmark="hr-bench", data=hr_bench, out=out), ZoomContext(model=quiet))
    assert files(out) == before


@pytest.mark.reliability(
    "Records",
    "a resume whose settings differ from the folder's config.json in any one recorded setting "
    "(every ZoomContext field, the dataset's SHA-256, methods, extractor, bad rows, benchmark)",
    "each result-changing one is refused by name; only the documented result-neutral ones "
    "(data path, shard, limit, base_url, request_timeout, package version) pass",
)
def test_every_recorded_setting_but_the_neutral_ones_is_compared(
    tmp_path: Path, hr_bench: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    plan = EvalPlan(benchmark="hr-bench", data=hr_bench, out=out)
    new = run_config(plan, ZoomContext(model=RuleVisionModel()))
    recorded = settings(new)
    assert set(recorded) >= RESULT_NEUTRAL_SETTINGS  # the constant names real settings
    fields = {item.name for item in dataclasses.fields(ZoomContext)}
    assert fields <= set(recorded)  # every context setting is recorded (model at the top)
    for name in recorded:
        old = json.loads(json.dumps(new))
        target = old if name in old else old["context"]
        target[name] = ["something else"]
        (out / "config.json").write_text(json.dumps(old))
        if name in RESULT_NEUTRAL_SETTINGS or name in agent_only_settings():  # no agent here
            written = resumed_config(out, new)
            assert written["previous_configs"] == [old], name
        else:
            with pytest.raises(RunSettingsChangedError, match=rf' {name} \["something else"\] → '):
                resumed_config(out, new)
            assert resumed_config(out, new, resume_anyway=True)["previous_configs"] == [old]


@pytest.mark.parametrize(
    ("old_methods", "new_methods", "refused"),
    [
        (["zoom-refine"], ["zoom-refine"], False),
        (["baseline", "zoom-refine"], ["baseline", "zoom-refine"], False),
        (["agent"], ["agent"], True),
        (["zoom-refine", "agent"], ["zoom-refine", "agent"], True),
        (None, ["zoom-refine"], True),  # methods unrecorded: the agent may have run
    ],
)
def test_the_agents_settings_count_only_where_the_agent_runs(
    tmp_path: Path, hr_bench: Path, old_methods: Any, new_methods: list[str], refused: bool
) -> None:
    """A folder made before `tool_convention` defaulted to `auto` (it was `crop`): resumed
    without `--resume-anyway` when no run has the agent, which alone reads the setting."""
    out = tmp_path / "run"
    out.mkdir()
    plan = EvalPlan(benchmark="hr-bench", data=hr_bench, out=out, methods=tuple(new_methods))
    new = run_config(plan, ZoomContext(model=RuleVisionModel()))
    assert new["context"]["tool_convention"] == "auto"
    old = json.loads(json.dumps(new))
    old["context"] |= {"tool_convention": "crop", "tool_call_format": "text"}
    if old_methods is None:
        del old["methods"]
    else:
        old["methods"] = old_methods
    (out / "config.json").write_text(json.dumps(old))
    if refused:
        with pytest.raises(RunSettingsChangedError, match=r' tool_convention "crop" → "auto"'):
            resumed_config(out, new)
        # Named as they were made (`--tool-convention crop --tool-call-format text`): resumed.
        new["context"] |= {"tool_convention": "crop", "tool_call_format": "text"}
        assert "previous_configs" not in resumed_config(out, new)
    else:
        assert resumed_config(out, new)["previous_configs"] == [old]
    assert agent_only_settings() == {"tool_convention", "tool_call_format", "tool_images"}


@pytest.mark.reliability(
    "Records",
    "resuming a folder whose config.json was written by another zoom-refine version, or lacks "
    "a setting added since, or cannot be read",
    "another version is allowed and noted (the old config, its version included, kept in "
    "`previous_configs`); a missing setting is not compared; an unreadable config.json is "
    "refused only when the folder holds predictions (their settings unknown)",
)
def test_versions_missing_settings_and_unreadable_configs(tmp_path: Path, hr_bench: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    new = run_config(EvalPlan(benchmark="hr-bench", data=hr_bench, out=out), ZoomContext())
    old = {key: value for key, value in new.items() if key != "bad_rows"}
    old["zoom_refine_version"] = "0.0.1"
    (out / "config.json").write_text(json.dumps(old))
    assert resumed_config(out, new)["previous_configs"] == [old]

    (out / "config.json").write_text('{"benchmark": "hr-be')  # torn by an older version
    assert resumed_config(out, new) == new  # nothing was predicted with it
    (out / "predictions.jsonl").write_text('{"id": "0", "method": "baseline"}\n')
    with pytest.raises(RunSettingsChangedError, match="cannot be read"):
        resumed_config(out, new)
    history = resumed_config(out, new, resume_anyway=True)["previous_configs"]
    assert len(history) == 1 and "unreadable" in history[0]
