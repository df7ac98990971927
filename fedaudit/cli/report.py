"""`fedaudit report`: write the leakage report (HTML, Markdown, JSON) of an audit's results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fedaudit.cli._common import console, err_console, error_boundary

#: Exit code of ``--fail-above`` when a setting's ASR upper bound exceeds the threshold.
EXIT_LEAKAGE_ABOVE = 4


def report(
    results_dir: Annotated[Path, typer.Argument(
        help="Results folder of `fedaudit audit` (holding results.json), or the results.json file.",
        show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Report folder (default: RESULTS_DIR/report).", show_default=False)] = None,
    formats: Annotated[str, typer.Option(
        "--format", "-f", help="Comma-separated outputs: html, md, json.")] = "html,md,json",
    fail_above: Annotated[float | None, typer.Option(
        "--fail-above", min=0.0, max=1.0, show_default=False,
        help="Exit with code 4, after writing the report, when any setting's ASR upper 95% bound "
             "exceeds this fraction (e.g. 0.6).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing report files.")] = False,
) -> None:
    """Write the leakage report of an audit: summary, findings by severity, table, plots, caveats."""
    from fedaudit.report import build_report, load_results, settings_above, write_report
    from fedaudit.report.render import parse_formats

    with error_boundary():
        chosen = parse_formats(formats)
        results = load_results(results_dir)
        folder = out if out is not None else (results_dir if results_dir.is_dir() else results_dir.parent) / "report"
        data = build_report(results).to_dict()
        written = write_report(data, folder, formats=chosen, force=force)
    for sentence in data["summary"][1:3]:
        console.print(escape(sentence))
    main = [p for p in written if p.suffix in (".html", ".md", ".json") and p.stem == "report"]
    console.print(f"wrote {', '.join(escape(p.name) for p in main)} in {escape(str(folder))}")
    if "html" in chosen:
        console.print(f"open {escape((folder / 'report.html').resolve().as_uri())}")
    if fail_above is not None:
        failed = settings_above(data, fail_above)
        if failed:
            err_console.print(
                f"[bold red]fail:[/] {len(failed)} of {len(data['settings'])} settings have an ASR upper 95% bound "
                f"above {100 * fail_above:g}%:"
            )
            for f in failed:
                s = f["score"]
                n = "1 update" if s["n_updates"] == 1 else f"{s['n_updates']} updates"
                err_console.print(
                    f"  {escape(f['id'])} ({escape(f['label'])}): ASR {s['asr']:.0%}, upper bound {s['ci_high']:.0%} "
                    f"({escape(s['attack'])}, {escape(s['attacker'])}, {escape(s['layer'])}, {n})"
                )
            raise typer.Exit(code=EXIT_LEAKAGE_ABOVE)
        console.print(f"pass: every setting's ASR upper 95% bound is at most {100 * fail_above:g}%")
