"""Shared pieces of the command line: consoles and the error boundary."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fedaudit.exceptions import FedAuditError, FedAuditWarning, OutputExistsError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

#: ``--no-verify`` of every command that reads a recording: pass ``verify=not no_verify`` to ``UpdateStore.open``.
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Skip the checksums of the recording (faster; the "
                                                            "layout is still checked).")]


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so every ``with`` block closes its files."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean close short
    raise Terminated


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None, *, _default: Any = warnings.showwarning) -> None:
    """fedaudit's own warnings as one yellow sentence each; any other warning as Python prints it."""
    if issubclass(category, FedAuditWarning):
        err_console.print(f"[bold yellow]warning:[/] {escape(' '.join(str(message).split()))}")
    else:
        _default(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Turn fedaudit errors into one red sentence and a non-zero exit code.

    Ctrl-C exits with 130 and SIGTERM with 143, each after a clean close (a
    recording keeps every round it committed) and one sentence.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        yield
    except FedAuditError as err:
        message = str(err)
        if isinstance(err, OutputExistsError):
            message = f"{message.rstrip('.')}; choose another output or pass --force to overwrite it."
        err_console.print(f"[bold red]error:[/] {escape(message)}")
        raise typer.Exit(code=err.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/] (Ctrl-C); files written so far were closed cleanly.")
        raise typer.Exit(code=130) from None
    except Terminated:
        err_console.print("[bold red]terminated[/] (SIGTERM); files written so far were closed cleanly.")
        raise typer.Exit(code=143) from None
    finally:
        warnings.showwarning = shown
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def print_warnings(messages: list[str]) -> None:
    """What weakens a result, in yellow on standard error, one sentence each."""
    for message in messages:
        err_console.print(f"[bold yellow]warning:[/] {escape(message)}")


@contextlib.contextmanager
def checksums(enabled: bool) -> Iterator[None]:
    """``--no-verify``: every recording the command opens skips (or checks) its checksums."""
    from fedaudit.record.reader import verification

    with verification(enabled):
        yield
