"""`zoom-refine official …`: the `official` preset checked against the official code itself.

`verify CHECKOUT` takes the official functions from a Zoom-Refine checkout the user names
(`evals.official_extract`: read with `ast`, then executed) and runs them side by side with the
preset on generated inputs (`evals.official_verify`). Registered on the main app by `register`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from zoom_refine.cli_app import App
from zoom_refine.tools.errors import ZoomRefineError

official_app = App(
    help="The official Zoom-Refine code (xavier-yu114/Zoom-Refine) and our `official` preset.",
    no_args_is_help=True,
)

SHOWN = 10
"""Reproducers printed per part by default (the smallest inputs first)."""


@official_app.command("verify")
def verify_command(
    checkout: Annotated[
        Path, typer.Argument(help="Root of a checkout of xavier-yu114/Zoom-Refine.")
    ],
    seed: Annotated[int, typer.Option(help="Seed of the generated inputs.")] = 0,
    small: Annotated[
        bool, typer.Option("--small", help="About a tenth of the inputs (a quick look).")
    ] = False,
    show: Annotated[
        int, typer.Option(help="Reproducers printed per part (smallest inputs first).")
    ] = SHOWN,
    record_golden: Annotated[
        Path | None,
        typer.Option(
            "--record-golden",
            help="Also write the official outputs on the golden inputs to this JSON file "
            "(tests/golden/official/…).",
        ),
    ] = None,
) -> None:
    """Check the `official` preset against the official functions of CHECKOUT.

    This RUNS code from CHECKOUT: the functions it needs (box and answer parsers, padding and
    crop, first-image shrink, tiling, the data conversions, both accuracy scripts) are read from
    its files with `ast` and executed in this process. Use a checkout you trust. Each part prints
    the inputs tried, the mismatches and a reproducer for each (the smallest first); the exit
    status is 0 only when nothing differs (1 when something does, 2 for a bad checkout)."""
    from zoom_refine.evals.official_checks import Scale
    from zoom_refine.evals.official_extract import load_official
    from zoom_refine.evals.official_verify import verify

    started = time.perf_counter()
    try:
        code = load_official(checkout)
        results = verify(code, seed=seed, scale=Scale.small() if small else Scale())
        if record_golden is not None:
            from zoom_refine.evals.official_golden import record_golden as record

            record(code, record_golden)
    except ZoomRefineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(f"official code: {code.checkout} (commit {code.commit or 'unknown'})")
    total = sum(part.checks for part in results)
    differing = sum(len(part.mismatches) for part in results)
    for part in results:
        print(f"{part.name}: {part.checks} inputs, {len(part.mismatches)} mismatches")
        for mismatch in part.smallest(show):
            print("  " + mismatch.reproducer(part.name))
        if len(part.mismatches) > show:
            print(f"  … {len(part.mismatches) - show} more (--show N)")
    seconds = time.perf_counter() - started
    print(f"total: {total} checks, {differing} mismatches, {seconds:.1f} s")
    if record_golden is not None:
        print(f"golden data written to {record_golden}")
    raise typer.Exit(1 if differing else 0)


def register(app: typer.Typer) -> None:
    """Add `zoom-refine official …` to `app` (called once by zoom_refine.cli)."""
    app.add_typer(official_app, name="official")
