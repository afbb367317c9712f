"""Each setting is described once, in ZoomContext's field metadata, and the CLI is made from it:
the options of `ask` and `eval`, their help, defaults, choices, ranges and panels."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from zoom_refine.agent.context import ZoomContext, setting_fields, settings_table
from zoom_refine.cli import app
from zoom_refine.tools.errors import InvalidInputError

runner = CliRunner()
COMMAND = typer.main.get_command(app)
EXPOSED = {
    "model", "base_url", "request_timeout", "max_hops", "max_regions", "confidence_threshold",
    "always_zoom", "prompt_style", "box_format", "model_family", "max_patches",
    "server_tile_budget", "view_max_side", "exact_preprocessing", "prompts", "tool_convention",
    "tool_call_format", "tool_images", "qwen_min_pixels", "qwen_max_pixels",
}  # fmt: skip
"""The ZoomContext fields `ask` and `eval` take as options (beside `--api-key`, `--preset`)."""
AGENT_ONLY = {"tool_convention", "tool_call_format", "tool_images"}


def options_of(command: str) -> dict[str, Any]:
    """`--name` → the click option of `command`."""
    params = COMMAND.commands[command].params  # type: ignore[attr-defined]
    return {opt: param for param in params for opt in param.opts if opt.startswith("--")}


RENAMED = {"qwen_min_pixels": "--min-pixels", "qwen_max_pixels": "--max-pixels"}
"""Fields whose option is not their name in dashes (the issue asks for `--max-pixels`)."""


def flag(name: str) -> str:
    return RENAMED.get(name, "--" + name.replace("_", "-"))


def test_every_field_has_one_description_and_cli_fields_are_the_known_set() -> None:
    fields = setting_fields()
    assert {field.name for field in fields} == {f.name for f in dataclasses.fields(ZoomContext)}
    for field in fields:
        description = field.metadata.get("description", "")
        assert len(description) > 20 and description.endswith("."), field.name
    assert {field.name for field in fields if "cli" in field.metadata} == EXPOSED
    own = [f.name for f in fields if f.name in ZoomContext.__dataclass_fields__]
    assert own[0] == "model"  # its own fields first, the inherited image settings after


@pytest.mark.parametrize("command", ["ask", "eval"])
def test_option_help_is_the_field_description(command: str) -> None:
    """The help of each option is its field's description, with every field that is an option
    written as that option (`max_hops` → `--max-hops`), then the CLI's own words, if any."""
    options = options_of(command)
    for field in setting_fields():
        if field.name not in EXPOSED:  # no option sets it (`--max-pixels` is qwen_max_pixels)
            assert field.name not in {param.name for param in options.values()}, field.name
            continue
        expected = re.sub(
            r"`([a-z0-9_]+)`",
            lambda m: flag(m.group(1)) if m.group(1) in EXPOSED else m.group(0),
            field.metadata["description"],
        )
        shown = options[flag(field.name)].help.replace("\\[", "[")  # rich markup escaping
        assert shown.startswith(expected), field.name
        suffix = field.metadata["cli"].get("suffix")
        assert shown == (f"{expected} {suffix}" if suffix else expected), field.name


@pytest.mark.parametrize("command", ["ask", "eval"])
def test_option_defaults_types_and_choices_are_the_fields(command: str) -> None:
    options = options_of(command)
    hints = typing.get_type_hints(ZoomContext)
    for name in EXPOSED:
        field = ZoomContext.__dataclass_fields__[name]
        option = options[flag(name)]
        assert option.default == field.default, name
        if typing.get_origin(hints[name]) is typing.Literal:
            assert option.metavar == "[" + "|".join(typing.get_args(hints[name])) + "]", name
        if hints[name] is bool:
            assert option.is_flag and option.opts == [flag(name)] and not option.secondary_opts
    help_text = " ".join(
        runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout.split()
    )
    assert "[default: hf:OpenGVLab/InternVL3-2B-hf]" in help_text
    assert "[default: 2048]" in help_text and "[default: 120.0]" in help_text


@pytest.mark.parametrize("command", ["ask", "eval"])
def test_ranges_and_panels_show_in_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for option, shown in (("--max-hops", "1..8"), ("--max-regions", "1..8")):
        (line,) = [line for line in lines if f" {option} " in line]
        assert line.split(option, 1)[1].split()[0] == shown
    panel = next(i for i, line in enumerate(lines) if "Model-driven zoom (--method agent)" in line)
    end = next(i for i in range(panel + 1, len(lines)) if lines[i].startswith("╰"))
    in_panel = {word for line in lines[panel:end] for word in line.split() if word.startswith("--")}
    assert {flag(name) for name in AGENT_ONLY} <= in_panel
    assert "--model" not in in_panel


RANGED = [field for field in setting_fields() if "range" in field.metadata]


@pytest.mark.parametrize("field", RANGED, ids=[field.name for field in RANGED])
def test_documented_ranges_are_the_ones_enforced(field: dataclasses.Field[Any]) -> None:
    """A range in the metadata (shown in the README and as the CLI metavar) is exactly what
    ZoomContext accepts: both bounds pass, a step beyond either is refused."""
    low, high = field.metadata["range"]
    step = 1 if isinstance(field.default, int) else 0.01
    for bound in (low, high):
        if bound is not None:
            ZoomContext(**{field.name: bound})
    for beyond in (None if low is None else low - step, None if high is None else high + step):
        if beyond is not None:
            with pytest.raises(InvalidInputError, match=field.name):
                ZoomContext(**{field.name: beyond})


def test_settings_table_rows_follow_the_fields() -> None:
    rows = settings_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [field.name for field in setting_fields()]
    (hops,) = [row for row in rows if row.startswith("| `max_hops` |")]
    assert "| `1` (1..8) |" in hops and "CLI: `--max-hops`." in hops
    (url,) = [row for row in rows if row.startswith("| `base_url` |")]
    assert url.endswith("(several: separated by commas). |")  # the CLI's own words, once
    (padding,) = [row for row in rows if row.startswith("| `padding` |")]
    assert "| `0.1` (0..10) |" in padding and "CLI:" not in padding
