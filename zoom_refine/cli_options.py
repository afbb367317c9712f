"""The model and image options of `ask` and `eval`, made from `ZoomContext`'s field metadata.

A field is an option when its metadata has a `cli` entry (agent/context.py): its help is the
field's description (field names written as their options: `max_hops` → `--max-hops`) and the
entry's `suffix`; its default is the field's; its type the field's, or the entry's `type`; its
choices the field's Literal. Ranged fields show their range as the metavar (`1..8`). Only
`--api-key` and `--preset`, which are not fields, are written here by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol

import typer
from rich.markup import escape

from zoom_refine.agent.context import (
    BASE_URL_ENV,
    OFFICIAL_SETTINGS,
    ZoomContext,
    range_text,
    setting_fields,
)
from zoom_refine.agent.models import use_api_key
from zoom_refine.tools.errors import ZoomRefineError

MODEL_PANEL = "Model and image (ZoomContext fields)"
AGENT_PANEL = "Model-driven zoom (--method agent)"
PANELS = {"model": MODEL_PANEL, "agent": AGENT_PANEL}
"""`metadata["cli"]["panel"]` → the help panel its option is shown in (default `model`)."""

BAD_TIMEOUT = "--request-timeout must be a positive number of seconds, got {value}"
Preset = Literal["default", "official"]
"""`--preset`: our settings, or `ZoomContext.official` (docs/fidelity.md)."""

CONTEXT_DEFAULTS: dict[str, Any] = {
    field.name: field.default for field in dataclasses.fields(ZoomContext)
}
"""ZoomContext's defaults: the CLI's defaults are the library's."""

HAND_WRITTEN: dict[str, tuple[Any, Any]] = {
    "api_key": (
        Annotated[
            str | None,
            typer.Option(
                help="API key for openai: models (default: $OPENAI_API_KEY). Sent with requests "
                "only; never written to config.json, predictions, traces or logs.",
                metavar="KEY",
                show_default=False,
                rich_help_panel=MODEL_PANEL,
            ),
        ],
        None,
    ),
    "preset": (
        Annotated[
            Preset,
            typer.Option(
                help="default: our settings; official: the official code's pipeline, every "
                "behaviour (docs/fidelity.md; options given on the command line still apply). "
                "Pair it with --prompts from `zoom-refine prompts from-official`.",
                rich_help_panel=MODEL_PANEL,
            ),
        ],
        "default",
    ),
}
"""The two model options that are not ZoomContext fields: (annotation, default)."""


_FIELDS = {field.name: field for field in dataclasses.fields(ZoomContext)}


def cli_fields() -> list[dataclasses.Field[Any]]:
    """The ZoomContext fields that are options of `ask` and `eval`, in documentation order."""
    return [field for field in setting_fields() if "cli" in field.metadata]


def option_name(name: str) -> str:
    """The option of ZoomContext field `name`: its metadata's `cli.flag` if it names one (e.g.
    `qwen_max_pixels` is `--max-pixels`), else the name in dashes."""
    field = _FIELDS.get(name)
    flag = field.metadata.get("cli", {}).get("flag") if field is not None else None
    return str(flag) if flag else "--" + name.replace("_", "-")


def option_help(field: dataclasses.Field[Any]) -> str:
    """The field's description as the command line reads it: every field that is an option
    named as one (`` `max_hops` `` → `--max-hops`), then the entry's `suffix`, if any."""
    options = {item.name for item in cli_fields()}

    def as_option(match: re.Match[str]) -> str:
        name = match.group(1)
        return option_name(name) if name in options else match.group(0)

    text = re.sub(r"`([a-z0-9_]+)`", as_option, field.metadata["description"])
    suffix = field.metadata["cli"].get("suffix")
    return f"{text} {suffix}" if suffix else text


def _option(field: dataclasses.Field[Any], hints: dict[str, Any]) -> tuple[Any, Any]:
    """(annotation, default) of `field`'s option: `Annotated[type, typer.Option(...)]`."""
    cli = field.metadata["cli"]
    value_type = cli.get("type", hints[field.name])
    flag = value_type is bool
    metavar = cli.get("metavar")
    if metavar is None and "range" in field.metadata and None not in field.metadata["range"]:
        metavar = range_text(field.metadata["range"])
    named = flag or "flag" in cli
    option = typer.Option(
        *((option_name(field.name),) if named else ()),
        help=escape(option_help(field)),  # typer reads help as rich markup: `[[…]]` stays
        metavar=metavar,
        min=cli.get("min"),
        show_default=field.default is not None,
        rich_help_panel=PANELS[cli.get("panel", "model")],
    )
    return Annotated[value_type, option], field.default


def _build_model_options() -> type[Any]:
    """The `ModelOptions` dataclass: one field per option, in help order (the ZoomContext
    options, with `--api-key` after `--base-url` and `--preset` before the agent panel)."""
    hints = typing.get_type_hints(ZoomContext)
    options = {field.name: _option(field, hints) for field in cli_fields()}
    order = [name for name in options if PANELS[_panel(name)] == MODEL_PANEL]
    order.insert(order.index("base_url") + 1, "api_key")
    order.append("preset")
    order += [name for name in options if name not in order]
    every = {**options, **HAND_WRITTEN}
    fields = [(name, every[name][0], dataclasses.field(default=every[name][1])) for name in order]
    return dataclasses.make_dataclass(
        "ModelOptions",
        fields,
        bases=(ModelOptionsBase,),
        frozen=True,
        namespace={"__module__": __name__},
    )


def _panel(name: str) -> str:
    field = next(item for item in cli_fields() if item.name == name)
    return str(field.metadata["cli"].get("panel", "model"))


class ModelSettings(Protocol):
    """What a command receives as `settings`: the model options, and the context they make."""

    api_key: str | None
    preset: Preset

    def context(self) -> ZoomContext: ...


class ModelOptionsBase:
    """`context()` for the generated `ModelOptions` (its fields are the options' values)."""

    def context(self) -> ZoomContext:
        """The run's context: the server URL(s) (else $ZOOM_REFINE_BASE_URL), the API key put
        where `openai:` models read it (never into the context), a positive request timeout,
        `--max-patches 0` as the processor's own setting."""
        values: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        use_api_key(values.pop("api_key"))
        preset = values.pop("preset")
        values["base_url"] = (
            values["base_url"] or os.environ.get(BASE_URL_ENV, "").replace(",", " ").split()
        )
        values["request_timeout"] = _positive_timeout(values["request_timeout"])
        values["max_patches"] = values["max_patches"] or None
        return _preset_context(preset, **values)


ModelOptions = _build_model_options()
"""The model and image options of `ask` and `eval`, defined once (`with_model_options`)."""


def _positive_timeout(seconds: float) -> float:
    if not seconds > 0:  # also refuses NaN
        raise ZoomRefineError(BAD_TIMEOUT.format(value=seconds))
    return seconds


def _preset_context(preset: Preset, **values: Any) -> ZoomContext:
    """The context of `--preset`: ours, or `ZoomContext.official` with the options set to other
    values than our defaults replacing the preset's (an option at our default keeps the
    preset's value: `--preset official --max-patches 6` tiles to 6, `--max-patches 12` to the
    preset's 12)."""
    if preset == "default":
        return ZoomContext(**values)
    given = {
        name: value
        for name, value in values.items()
        if name not in OFFICIAL_SETTINGS or value != CONTEXT_DEFAULTS.get(name)
    }
    return ZoomContext.official(**given)


def with_model_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` every `ModelOptions` field as an option; it receives them together as its
    `settings` argument. One definition for `ask` and `eval`, so their options cannot drift."""
    hints = typing.get_type_hints(ModelOptions, include_extras=True)
    shared = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in dataclasses.fields(ModelOptions)
    ]
    signature = inspect.signature(command, eval_str=True)
    own = [param for name, param in signature.parameters.items() if name != "settings"]
    clash = {param.name for param in own} & {param.name for param in shared}
    if clash:
        raise TypeError(f"{command.__name__} defines shared model options itself: {sorted(clash)}")
    names = [param.name for param in shared]

    @functools.wraps(command)
    def with_settings(**kwargs: Any) -> None:
        settings = ModelOptions(**{name: kwargs.pop(name) for name in names})
        command(**kwargs, settings=settings)

    parameters = own + shared
    with_settings.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_settings.__annotations__ = {param.name: param.annotation for param in parameters}
    return with_settings
