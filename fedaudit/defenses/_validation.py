"""Parameter checks shared by the defense modules (private).

Two families: the range checks of the numerical kernels and transforms
(``"must be a real number in (0, inf)"``), and the scikit-learn style checks
of the defense dataclasses (``"must be a float > 0"``). Every message names
the parameter, its owner and the value it got.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from fedaudit.exceptions import InvalidParameterError

# -- kernels and transforms ------------------------------------------------------------------


def is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_real(
    value: object, name: str, caller: str, *, low: float, low_open: bool, high: float = math.inf,
    high_open: bool = False,
) -> float:
    ok = is_real(value) and not math.isnan(float(value))  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open or math.isinf(high) else "]"
        hi_text = "inf" if math.isinf(high) else f"{high:g}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a real number in {lo}{low:g}, {hi_text}{hi}. "
            f"Got {value!r} instead."
        )
    return float(value)  # type: ignore[arg-type]


def check_positive(value: object, name: str, caller: str) -> float:
    v = check_real(value, name, caller, low=0.0, low_open=True)
    if math.isinf(v):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a finite real number > 0. Got {value!r} instead."
        )
    return v


def check_nonnegative(value: object, name: str, caller: str) -> float:
    v = check_real(value, name, caller, low=0.0, low_open=False)
    if math.isinf(v):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a finite real number >= 0. Got {value!r} instead."
        )
    return v


def check_delta(value: object, caller: str) -> float:
    return check_real(value, "delta", caller, low=0.0, low_open=True, high=1.0, high_open=True)


def check_sample_rate(value: object, name: str, caller: str) -> float:
    return check_real(value, name, caller, low=0.0, low_open=True, high=1.0)


def check_steps(value: object, name: str, caller: str) -> int:
    if not is_int(value) or int(value) < 0:  # type: ignore[call-overload]
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be an integer >= 0. Got {value!r} instead."
        )
    return int(value)  # type: ignore[call-overload]


def check_choice(value: object, name: str, caller: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be one of {list(choices)}. Got {value!r} instead."
        )
    return value


# -- defense dataclasses (scikit-learn wording) ------------------------------------------------


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    if low is None:
        return f"< {high:g}" if high_open else f"<= {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def param_float(
    owner: object, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
    high_open: bool = False, optional: bool = False,
) -> None:
    """Check ``owner.<name>`` is a finite real number in the interval (``None`` too if ``optional``)."""
    value = getattr(owner, name)
    if optional and value is None:
        return
    ok = is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (low is None or (v > low if low_open else v >= low)) and (
            high is None or (v < high if high_open else v <= high)
        )
    if not ok:
        what = f"a float {_interval(low, high, low_open, high_open)}" if low is not None or high is not None else "a float"
        raise InvalidParameterError(
            f"The {name!r} parameter of {type(owner).__name__} must be {what}{' or None' if optional else ''}. "
            f"Got {value!r} instead."
        )


def param_int(owner: object, name: str, *, low: int, high: int | None = None, optional: bool = False) -> None:
    """Check ``owner.<name>`` is an integer in ``[low, high]`` (``None`` too if ``optional``)."""
    value = getattr(owner, name)
    if optional and value is None:
        return
    if not is_int(value) or value < low or (high is not None and value > high):
        what = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidParameterError(
            f"The {name!r} parameter of {type(owner).__name__} must be an int {what}"
            f"{' or None' if optional else ''}. Got {value!r} instead."
        )


def param_choice(owner: object, name: str, choices: Sequence[str]) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or value not in choices:
        raise InvalidParameterError(
            f"The {name!r} parameter of {type(owner).__name__} must be one of {list(choices)}. "
            f"Got {value!r} instead."
        )


def param_bool(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise InvalidParameterError(
            f"The {name!r} parameter of {type(owner).__name__} must be a bool. Got {value!r} instead."
        )


def param_exactly_one(owner: object, first: str, second: str) -> None:
    """Check exactly one of two optional parameters is set."""
    a, b = getattr(owner, first), getattr(owner, second)
    if (a is None) == (b is None):
        raise InvalidParameterError(
            f"{type(owner).__name__} needs exactly one of {first!r} and {second!r}. "
            f"Got {first}={a!r} and {second}={b!r} instead."
        )


def require_opacus() -> None:
    try:
        import opacus  # noqa: F401
    except ImportError as err:  # pragma: no cover - opacus is installed in dev
        raise ImportError(
            "Privacy accounting and DP-SGD need Opacus; install it with: pip install 'fedaudit[dp]'"
        ) from err
