"""How the report writes numbers and names, in one place so every renderer says the same thing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def pct(x: float | None) -> str:
    """``0.953`` -> ``"95%"``; ``None`` -> ``"n/a"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.0f}%"


def interval(lo: float, hi: float) -> str:
    """``(0.88, 1.0)`` -> ``"88-100%"``."""
    return f"{100 * lo:.0f}-{100 * hi:.0f}%"


def figure(score: Mapping[str, Any]) -> str:
    """``"95% (95% CI 88-100%, chance 50%)"``: every figure with its interval and chance level."""
    return f"{pct(score['asr'])} (95% CI {interval(score['ci_low'], score['ci_high'])}, chance {pct(score['chance'])})"


def layer_phrase(layer: str) -> str:
    """``"fc1"`` -> ``"the first layer"``, ``"fused"`` -> ``"all layers combined"``."""
    if layer == "fused":
        return "all layers combined"
    if layer.startswith("fc") and layer[2:].isdigit() and 1 <= int(layer[2:]) <= len(_ORDINALS):
        return f"the {_ORDINALS[int(layer[2:]) - 1]} layer"
    return f"layer {layer}"


def layer_short(layer: str) -> str:
    """``"fc1"`` -> ``"layer 1"`` (the CLI numbers layers from 1), ``"fused"`` -> ``"fused"``."""
    if layer.startswith("fc") and layer[2:].isdigit():
        return f"layer {int(layer[2:])}"
    return layer


def layer_order(layer: str) -> tuple[int, str]:
    """Sort key: fc1, fc2, ..., other names, then fused."""
    if layer == "fused":
        return (10**6, layer)
    if layer.startswith("fc") and layer[2:].isdigit():
        return (int(layer[2:]), layer)
    return (10**5, layer)


def n_updates_order(n: int | str) -> int:
    return 10**9 if n == "all" else int(n)


def attacker_phrase(attacker: str) -> str:
    """How a sentence names the attacker after the attack's name."""
    return {
        "defense-aware": "",
        "undefended": " (an attacker whose shadow runs had no defense)",
    }.get(attacker, f" ({attacker} attacker)")


def size(n: float | None) -> str:
    """Bytes as ``"3.4 MB"``."""
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def seconds(s: float | None) -> str:
    """Seconds as ``"41 s"``, ``"12 ms"`` or ``"2.5 min"``."""
    if s is None:
        return "n/a"
    if s >= 120:
        return f"{s / 60:.1f} min"
    if s >= 10:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.1f} s"
    return f"{1000 * s:.0f} ms" if s >= 0.01 else f"{1000 * s:.1f} ms"


def number(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}"


def epsilon(x: float | None) -> str:
    """``9.96`` -> ``"9.96"``, ``1012.4`` -> ``"1012"``."""
    if x is None:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def delta(x: float | None) -> str:
    """``1e-05`` -> ``"1e-5"``."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    mantissa, exp = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exp)}"


def measure(x: float | None, unit: str | None) -> str:
    """A reconstruction figure: ``"fraction"`` as a percentage, no unit with two decimals, else value and unit."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if unit == "fraction":
        return pct(x)
    text = f"{x:.3g}" if abs(x) >= 100 or (x != 0 and abs(x) < 0.01) else f"{x:.2f}"
    return f"{text} {unit}" if unit else text


def measure_interval(lo: float | None, hi: float | None, unit: str | None) -> str:
    """``"0.91-0.97"``, ``"88-100%"`` or ``"12.1-15.3 Hz"``; ``"n/a"`` when a bound is missing."""
    if lo is None or hi is None:
        return "n/a"
    if unit == "fraction":
        return interval(lo, hi)
    return f"{measure(lo, None)}-{measure(hi, unit)}"
