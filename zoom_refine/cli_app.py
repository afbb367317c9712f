"""Typer plumbing shared by every `zoom-refine` command module: help that reads plainly.

typer 0.29 prints every option's Python type (`<int>`, `<list[str]>`, `<int range> [x>=0]`,
`--json <bool>`) and wraps required arguments in braces (`{image} {question}`). Commands made
here show plain metavars instead: `INTEGER`, `URL`, `[paper|internvl]`, `1..8`, flags bare, and
`IMAGE QUESTION` in the usage line. This module imports no other `zoom_refine.cli*` module, so
the plug-in command modules may use it (they never import `zoom_refine.cli`).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]
"""Click's UsageError as typer vendors it (typer exports only its subclass BadParameter)."""

TYPE_NAMES: dict[Any, str] = {
    int: "INTEGER",
    float: "FLOAT",
    str: "TEXT",
    Path: "PATH",
}
"""Plain metavars by the option's value type (click's words)."""


class PlainArgument(TyperArgument):
    """An argument shown as `NAME` (its choices, if any, beside it), never `{name} <str>`."""

    def display_type_rich(self, ctx: Any) -> str | None:
        choices = self.type_descriptor.choices if self.type_descriptor.is_choice else None
        return f"[{'|'.join(str(choice) for choice in choices)}]" if choices else None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name if self.nargs == 1 else f"{name}..."


class PlainOption(TyperOption):
    """An option whose value is shown by a plain metavar: see `plain_metavar`."""

    def _get_number_range_help_str(self) -> str | None:
        return None  # the range, when there is one, is in the metavar (`1..8`) or the help


def plain_metavar(option: TyperOption) -> str:
    """`""` for a flag; `[a|b]` for a choice; `LO..HI` for a number bounded on both sides; else
    the value type's plain name (`INTEGER`, `FLOAT`, `TEXT`, `PATH`)."""
    if option.is_flag:
        return ""
    descriptor = option.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return f"[{'|'.join(str(choice) for choice in descriptor.choices)}]"
    if option.min is not None and option.max is not None:
        return f"{option.min}..{option.max}"
    annotation: Any = descriptor.annotation
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if descriptor.is_path:
        return "PATH"
    return TYPE_NAMES.get(annotation, "VALUE")


def make_plain(param: Any) -> None:
    """Show `param` plainly in `--help` (in place; click keeps the parameter objects)."""
    if isinstance(param, TyperArgument) and not isinstance(param, PlainArgument):
        param.__class__ = PlainArgument
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
    elif isinstance(param, TyperOption):
        if param.metavar is None:
            param.metavar = plain_metavar(param)
        param.__class__ = PlainOption


def _repeatable_options(command: Any) -> list[str]:
    """The option names of `command` that take several values by repetition (e.g. `-o`)."""
    return [
        param.opts[-1]
        for param in command.params
        if isinstance(param, TyperOption) and param.multiple and param.opts
    ]


class FlagCommand(TyperCommand):
    """A command whose `--help` shows plain metavars (`make_plain`), `--help` included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            make_plain(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        make_plain(option)
        return option

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Click's "unexpected extra arguments" error, with the hint a newcomer needs when the
        extras follow a repeatable option (`-o 3 7 12` means one option and three stray words)."""
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERROR as error:
            usage: Any = error
            repeatable = _repeatable_options(self)
            if "unexpected extra argument" in usage.message and repeatable:
                first = repeatable[0]
                usage.message += (
                    f"; options that take several values are repeated, one value each "
                    f"({', '.join(repeatable)}): {first} A {first} B"
                )
            raise


class FlagGroup(TyperGroup):
    """A command group, its `--help` and `--version` shown plainly likewise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            make_plain(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        make_plain(option)
        return option


CommandFunction = typing.TypeVar("CommandFunction", bound=Callable[..., Any])


class App(typer.Typer):
    """`typer.Typer` whose group is a `FlagGroup` and commands `FlagCommand`s unless told
    otherwise; no shell-completion options."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", FlagGroup)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[CommandFunction], CommandFunction]:
        kwargs.setdefault("cls", FlagCommand)
        return super().command(*args, **kwargs)
