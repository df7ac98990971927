"""Shared pieces of the command line: consoles and the error boundary."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from fedaudit.exceptions import FedAuditError, OutputExistsError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Turn fedaudit errors into one red sentence and a non-zero exit code."""
    try:
        yield
    except FedAuditError as err:
        message = str(err)
        if isinstance(err, OutputExistsError):
            message = f"{message.rstrip('.')}; choose another output or pass --force to overwrite it."
        err_console.print(f"[bold red]error:[/] {escape(message)}")
        raise typer.Exit(code=err.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        raise typer.Exit(code=130) from None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
