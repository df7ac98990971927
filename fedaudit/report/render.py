"""Write a leakage report (its JSON form) as JSON, Markdown (plots as SVG files beside it) or HTML.

The HTML is one self-contained file: inline CSS, plots inline as ``data:`` URIs, no script, no
network; it prints on A4 landscape. Every writer refuses to replace an existing file unless
``force=True``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from os import PathLike
from pathlib import Path
from typing import Any

from fedaudit.exceptions import InvalidParameterError, OutputExistsError
from fedaudit.report import _format as fmt
from fedaudit.report.schema import ReportError, validate_report

__all__ = ["FORMATS", "OUTPUT_NAMES", "parse_formats", "write_html", "write_json", "write_markdown", "write_report"]

#: Output formats, in the order they are written.
FORMATS: tuple[str, ...] = ("html", "md", "json")
#: Format -> file name in the report folder.
OUTPUT_NAMES: Mapping[str, str] = {"html": "report.html", "md": "report.md", "json": "report.json"}

PathLikeStr = str | PathLike[str]


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """``"html,md"`` or ``["html", "md"]`` -> ``("html", "md")`` in :data:`FORMATS` order.

    Raises
    ------
    InvalidParameterError
        When a name is not one of :data:`FORMATS`, or none is given.
    """
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise InvalidParameterError(
            f"The report format must be a comma-separated list of {', '.join(FORMATS)}; "
            f"got {', '.join(map(repr, unknown)) if unknown else 'none'}."
        )
    return tuple(f for f in FORMATS if f in names)


def _checked(report: Any) -> Mapping[str, Any]:
    if not isinstance(report, Mapping):
        raise ReportError(
            f"The renderers take a report's JSON form (a dict); got {type(report).__name__}: pass report.to_dict()."
        )
    validate_report(report)
    return report


def _refuse_existing(paths: Iterable[Path], force: bool) -> None:
    if force:
        return
    for path in paths:
        if path.exists():
            raise OutputExistsError(f"{path} already exists.")


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a failed write leaves no half report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@cache
def _environment(kind: str) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fedaudit.report", "templates"),
        autoescape=kind == "html", undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update({
        "pct": fmt.pct, "interval": lambda s: fmt.interval(s["ci_low"], s["ci_high"]), "figure": fmt.figure,
        "size": fmt.size, "seconds": fmt.seconds, "epsilon": fmt.epsilon, "delta": fmt.delta, "number": fmt.number,
        "layer": fmt.layer_short, "measure": lambda x, unit=None: fmt.measure(x, unit),
        "measure_interval": lambda m: fmt.measure_interval(m["ci_low"], m["ci_high"], m["unit"]), "md_cell": lambda s: str(s).replace("|", "\\|").replace("\n", " "),
    })
    return env


def _render(kind: str, template: str, report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    by_setting: dict[str | None, list[Mapping[str, Any]]] = {}
    for caveat in report["caveats"]:
        by_setting.setdefault(caveat["setting"], []).append(caveat)
    return _environment(kind).get_template(template).render(
        report=report, plots=plots, caveats_by_setting=by_setting,
        worst_severity=next((f["severity"] for f in report["findings"]), "none"),
    )


def _plots(report: Mapping[str, Any], plots: Mapping[str, bytes] | None) -> Mapping[str, bytes]:
    if plots is not None:
        return plots
    from fedaudit.report.plots import render_plots

    return render_plots(report)


def write_json(report: Mapping[str, Any], path: PathLikeStr, *, force: bool = False) -> Path:
    """Write the report's JSON form (validated against the shipped report schema) to ``path``.

    Raises
    ------
    OutputExistsError
        When ``path`` exists and ``force`` is false.
    ReportError
        When ``report`` breaks the ``fedaudit.leakage_report`` schema.
    """
    report = _checked(report)
    out = Path(path)
    _refuse_existing([out], force)
    _write_text(out, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return out


def _markdown_plot_paths(out: Path, report: Mapping[str, Any]) -> dict[str, Path]:
    return {p["id"]: out.with_name(f"{out.stem}-{p['id']}.svg") for p in report["plots"] if p["available"]}


def write_markdown(report: Mapping[str, Any], path: PathLikeStr, *, force: bool = False,
                   plots: Mapping[str, bytes] | None = None) -> list[Path]:
    """Write the report as Markdown to ``path``, with its plots as SVG files beside it.

    Parameters
    ----------
    report
        The report's JSON form (:meth:`LeakageReport.to_dict`).
    path
        The Markdown file; plots go to ``<stem>-<plot id>.svg`` in the same folder.
    force
        Replace existing files.
    plots
        Plot id to SVG bytes, when already drawn (:func:`fedaudit.report.plots.render_plots`).

    Returns
    -------
    list of Path
        The Markdown file, then the plot files.
    """
    report = _checked(report)
    out = Path(path)
    plot_paths = _markdown_plot_paths(out, report)
    _refuse_existing([out, *plot_paths.values()], force)
    drawn = _plots(report, plots)
    written = []
    for pid, svg in drawn.items():
        if pid in plot_paths:
            plot_paths[pid].parent.mkdir(parents=True, exist_ok=True)
            plot_paths[pid].write_bytes(svg)
            written.append(plot_paths[pid])
    _write_text(out, _render("md", "report.md.j2", report, {pid: p.name for pid, p in plot_paths.items()
                                                            if pid in drawn}))
    return [out, *written]


def write_html(report: Mapping[str, Any], path: PathLikeStr, *, force: bool = False,
               plots: Mapping[str, bytes] | None = None) -> Path:
    """Write the report as one self-contained HTML file (inline CSS, plots as ``data:`` URIs).

    Parameters are those of :func:`write_markdown`.
    """
    report = _checked(report)
    out = Path(path)
    _refuse_existing([out], force)
    drawn = _plots(report, plots)
    uris = {pid: "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii") for pid, svg in drawn.items()}
    _write_text(out, _render("html", "report.html.j2", report, uris))
    return out


def write_report(report: Mapping[str, Any], out_dir: PathLikeStr, *, formats: str | Sequence[str] = FORMATS,
                 force: bool = False) -> list[Path]:
    """Write ``report.html``, ``report.md`` and ``report.json`` (those of ``formats``) in ``out_dir``.

    Nothing is written when any output exists and ``force`` is false.

    Parameters
    ----------
    report
        The report's JSON form (:meth:`LeakageReport.to_dict`).
    out_dir
        The report folder (created if missing).
    formats
        Some of :data:`FORMATS`, as a sequence or a comma-separated string.
    force
        Replace existing files.

    Returns
    -------
    list of Path
        Every file written, the main file of each format first.

    Raises
    ------
    InvalidParameterError
        When a format name is unknown.
    OutputExistsError
        When an output exists and ``force`` is false.
    """
    chosen = parse_formats(formats)
    report = _checked(report)
    folder = Path(out_dir)
    targets = [folder / OUTPUT_NAMES[f] for f in chosen]
    if "md" in chosen:
        targets += _markdown_plot_paths(folder / OUTPUT_NAMES["md"], report).values()
    _refuse_existing(targets, force)
    drawn = _plots(report, None) if {"html", "md"} & set(chosen) else {}
    written: list[Path] = []
    if "html" in chosen:
        written.append(write_html(report, folder / OUTPUT_NAMES["html"], force=True, plots=drawn))
    if "md" in chosen:
        written += write_markdown(report, folder / OUTPUT_NAMES["md"], force=True, plots=drawn)
    if "json" in chosen:
        written.append(write_json(report, folder / OUTPUT_NAMES["json"], force=True))
    return written
