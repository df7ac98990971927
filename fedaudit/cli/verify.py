"""`fedaudit verify`: check a whole recording and say which rows and rounds are damaged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fedaudit.cli._common import console, err_console, error_boundary
from fedaudit.exceptions import DamagedRecordingError


def verify(
    path: Annotated[Path, typer.Argument(help="A recording written by `fedaudit record`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check a recording's layout, counters and every checksum; exit 4 if any part is damaged."""
    from fedaudit.record import verify_recording

    with error_boundary():
        found = verify_recording(path)
        if as_json:
            typer.echo(json.dumps(found.to_dict(), indent=2, sort_keys=True))
        elif found.ok:
            console.print(f"[green]ok:[/] {escape(found.summary())}")
            for note in found.notes:
                if note not in found.summary():
                    console.print(f"  {escape(note)}")
        if not found.ok:
            if not as_json:
                err_console.print(f"[bold red]damaged:[/] {escape(found.summary())}")
            raise typer.Exit(code=DamagedRecordingError.exit_code)
