"""Entry point of the ``fedaudit`` command."""

from __future__ import annotations

import typer

from fedaudit._version import __version__
from fedaudit.cli.attack import attack
from fedaudit.cli.audit import audit
from fedaudit.cli.inspect_cmd import inspect
from fedaudit.cli.invert import invert
from fedaudit.cli.leakage import leakage
from fedaudit.cli.record import record
from fedaudit.cli.report import report
from fedaudit.cli.shadow import shadow
from fedaudit.cli.verify import verify

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Audit what a federated learning run leaks about its clients.",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fedaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version."),
) -> None:
    """Audit what a federated learning run leaks about its clients."""


app.command()(audit)
app.command()(record)
app.command()(report)
app.command()(inspect)
app.command()(shadow)
app.command()(attack)
app.command()(leakage)
app.command()(invert)
app.command()(verify)


def _register_corpus() -> None:
    from fedaudit.cli import corpus as _corpus

    app.add_typer(_corpus.app, name="corpus")


_register_corpus()
