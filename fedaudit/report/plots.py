"""The report's plots, drawn with matplotlib (Agg, no display, no LaTeX) from the report's JSON form.

Each plot is an SVG document (text as paths, so it needs no font on the reader's machine) whose
bytes are the same for the same report.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

from fedaudit.report import _format as fmt

__all__ = ["render_plots"]

_COLORS = ("#1b6ca8", "#e07b39", "#3a9e5c", "#b8425a", "#7d5ba6", "#8c6d3f", "#d17cb8", "#6b6b6b")
_RC = {
    "svg.hashsalt": "fedaudit-report",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}


_ALGORITHMS = {"fedsgd": "FedSGD", "fedavg": "FedAvg"}


def _label(text: str) -> str:
    return "\n".join(textwrap.wrap(text, 13)) or text


def _percent_axis(axis: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _err(scores: list[Mapping[str, Any]]) -> list[list[float]]:
    return [[s["asr"] - s["ci_low"] for s in scores], [s["ci_high"] - s["asr"] for s in scores]]


def _best_by(scores: list[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]) -> dict[Any, Mapping[str, Any]]:
    out: dict[Any, Mapping[str, Any]] = {}
    for s in scores:
        k = key(s)
        if k not in out or (s["asr"], s["ci_low"]) > (out[k]["asr"], out[k]["ci_low"]):
            out[k] = s
    return out


def _asr_per_layer(fig: Any, report: Mapping[str, Any]) -> None:
    settings = [st for st in report["settings"] if any(s["group"] == "layers" for s in st["scores"])]
    per = [_best_by([s for s in st["scores"] if s["group"] == "layers"], lambda s: s["layer"]) for st in settings]
    layers = sorted({layer for p in per for layer in p}, key=fmt.layer_order)
    ax = fig.add_subplot()
    width = 0.8 / len(layers)
    for j, layer in enumerate(layers):
        xs = [i + (j - (len(layers) - 1) / 2) * width for i, p in enumerate(per) if layer in p]
        scores = [p[layer] for p in per if layer in p]
        ax.bar(xs, [s["asr"] for s in scores], width * 0.92, yerr=_err(scores), capsize=2,
               color=_COLORS[j % len(_COLORS)], label=fmt.layer_short(layer), error_kw={"elinewidth": 0.8})
    for i, p in enumerate(per):
        chance = next(iter(p.values()))["chance"]
        ax.hlines(chance, i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=0.9,
                  label="chance" if i == 0 else None)
    ax.set_xticks(range(len(settings)), [_label(st["label"]) for st in settings])
    ax.set_ylim(0, 1.05)
    _percent_axis(ax.yaxis)
    ax.set_ylabel("ASR (single update)")
    ax.legend(ncols=min(len(layers) + 1, 6), loc="upper center", bbox_to_anchor=(0.5, -0.18))


def _asr_vs_epsilon(fig: Any, report: Mapping[str, Any]) -> None:
    groups: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for st in report["settings"]:
        eps = [p for p in st["privacy"] if p["epsilon_median"] is not None]
        if st["leakage"] is None or not eps:
            continue
        algorithm = _ALGORITHMS.get(st["algorithm"], st["algorithm"])
        key = f"{algorithm} + {' + '.join(p['mechanism'].upper() for p in eps)}"
        groups.setdefault(key, []).append((max(p["epsilon_median"] for p in eps), st))
    ax = fig.add_subplot()
    utility = ax.twinx()
    for j, (key, points) in enumerate(sorted(groups.items())):
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        scores = [p[1]["leakage"] for p in points]
        color = _COLORS[j % len(_COLORS)]
        ax.errorbar(xs, [s["asr"] for s in scores], yerr=_err(scores), marker="o", capsize=3, color=color,
                    label=f"ASR, {key}")
        uars = [(x, p[1]["utility"]["test_uar"]) for x, p in zip(xs, points, strict=True)
                if p[1]["utility"]["test_uar"] is not None]
        if uars:
            utility.plot([u[0] for u in uars], [u[1] for u in uars], marker="s", linestyle="--", color=color,
                         alpha=0.7, label=f"test UAR, {key}")
    chance = min(st["leakage"]["chance"] for pts in groups.values() for _, st in pts)
    ax.axhline(chance, color="black", linestyle="dashed", linewidth=0.9, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("claimed epsilon (median over clients)")
    ax.set_ylabel("ASR (best single update)")
    utility.set_ylabel("test UAR (emotion)")
    for axis in (ax, utility):
        axis.set_ylim(0, 1.05)
        _percent_axis(axis.yaxis)
    utility.grid(False)
    utility.spines["right"].set_visible(True)
    handles = [h for a in (ax, utility) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (ax, utility) for lab in a.get_legend_handles_labels()[1]]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)


def _asr_vs_updates(fig: Any, report: Mapping[str, Any]) -> None:
    curves = []
    for st in report["settings"]:
        best = _best_by([s for s in st["scores"] if s["group"] == "n_updates"], lambda s: s["n_updates"])
        if len(best) >= 2:
            curves.append((st, best))
    counts = sorted({n for _, best in curves for n in best}, key=fmt.n_updates_order)
    ax = fig.add_subplot()
    for j, (st, best) in enumerate(curves):
        ns = sorted(best, key=fmt.n_updates_order)
        xs = [counts.index(n) + (j - (len(curves) - 1) / 2) * 0.04 for n in ns]
        scores = [best[n] for n in ns]
        ax.errorbar(xs, [s["asr"] for s in scores], yerr=_err(scores), marker="o", capsize=3,
                    color=_COLORS[j % len(_COLORS)], label=st["label"])
    chance = min(best[n]["chance"] for _, best in curves for n in best)
    ax.axhline(chance, color="black", linestyle="dashed", linewidth=0.9, label="chance")
    ax.set_xticks(range(len(counts)), [str(n) for n in counts])
    ax.set_xlabel("updates of a client averaged")
    ax.set_ylabel("ASR (all layers fused)")
    ax.set_ylim(0, 1.05)
    _percent_axis(ax.yaxis)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)


def _utility_vs_leakage(fig: Any, report: Mapping[str, Any]) -> None:
    points = [st for st in report["settings"] if st["leakage"] is not None and st["utility"]["test_uar"] is not None]
    ax = fig.add_subplot()
    for j, st in enumerate(points):
        s = st["leakage"]
        ax.errorbar([s["asr"]], [st["utility"]["test_uar"]], xerr=_err([s]), marker="o", capsize=3,
                    color=_COLORS[j % len(_COLORS)], label=st["label"])
    chance = min(st["leakage"]["chance"] for st in points)
    ax.axvline(chance, color="black", linestyle="dashed", linewidth=0.9, label="chance")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.05)
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.set_xlabel("ASR (best single update): leakage")
    ax.set_ylabel("test UAR (emotion): utility")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)


_DRAW: dict[str, Callable[[Any, Mapping[str, Any]], None]] = {
    "asr-per-layer": _asr_per_layer,
    "asr-vs-epsilon": _asr_vs_epsilon,
    "asr-vs-updates": _asr_vs_updates,
    "utility-vs-leakage": _utility_vs_leakage,
}


def render_plots(report: Mapping[str, Any]) -> dict[str, bytes]:
    """SVG bytes of every available plot of ``report`` (its JSON form), keyed by plot id.

    Plots the report marks unavailable, or that this version cannot draw, are left out.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = {}
    n = max(len(report["settings"]), 1)
    for plot in report["plots"]:
        draw = _DRAW.get(plot["id"])
        if not plot["available"] or draw is None:
            continue
        with matplotlib.rc_context(_RC):
            wide = plot["id"] == "asr-per-layer"
            fig = Figure(figsize=(max(6.5, 1.45 * n) if wide else 6.5, 4.2), layout="constrained")
            FigureCanvasAgg(fig)  # this figure's own Agg canvas: the global backend (pyplot's) is left alone
            draw(fig, report)
            buf = io.BytesIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        out[plot["id"]] = buf.getvalue()
    return out
