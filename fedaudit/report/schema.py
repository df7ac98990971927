"""The JSON Schemas of an audit's results and of the leakage report, and validation against them.

Both schemas ship in ``fedaudit/report/schemas/`` (copied in ``docs/schemas/``). A document that
breaks one gets a single sentence naming the key at fault, not jsonschema's multi-line dump.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

from fedaudit.exceptions import FedAuditError

__all__ = [
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_VERSION",
    "RESULTS_SCHEMA",
    "RESULTS_SCHEMA_VERSION",
    "ReportError",
    "load_results",
    "schema_document",
    "validate_report",
    "validate_results",
]

RESULTS_SCHEMA = "fedaudit.audit_results"
RESULTS_SCHEMA_VERSION = "1.1.0"
REPORT_SCHEMA = "fedaudit.leakage_report"
REPORT_SCHEMA_VERSION = "1.1.0"

#: Schema name -> file in ``fedaudit/report/schemas/``.
_SCHEMA_FILES = {
    RESULTS_SCHEMA: "audit_results.schema.json",
    REPORT_SCHEMA: "leakage_report.schema.json",
}


class ReportError(FedAuditError, ValueError):
    """An audit's results cannot be read or do not follow their schema, or a report is malformed."""

    exit_code = 1


@cache
def _schema_text(name: str) -> str:
    return resources.files("fedaudit.report").joinpath("schemas", _SCHEMA_FILES[name]).read_text("utf-8")


def schema_document(name: str) -> dict[str, Any]:
    """The JSON Schema of ``name`` (``"fedaudit.audit_results"`` or ``"fedaudit.leakage_report"``).

    Raises
    ------
    ReportError
        When ``name`` is not one of the two schemas.
    """
    if name not in _SCHEMA_FILES:
        raise ReportError(f"Unknown schema {name!r}; fedaudit ships {', '.join(map(repr, _SCHEMA_FILES))}.")
    return json.loads(_schema_text(name))


def _where(path: Any) -> str:
    """``cells[0].attacks[1].layers.fc1`` from a jsonschema error path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"


def _describe(schema: Mapping[str, Any]) -> str:
    """A few words for a sub-schema: ``{"type": "integer", "minimum": 1}`` -> ``"an integer >= 1"``."""
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type")
    words = {"integer": "an integer", "number": "a number", "string": "a string", "null": "null",
             "object": "an object", "array": "a list", "boolean": "true or false"}
    text = words.get(kind, "an object") if isinstance(kind, str) or kind is None else " or ".join(
        words.get(k, k) for k in kind)
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    return text


def _sentence(error: Any, source: str) -> str:
    """One sentence for the deepest, most specific jsonschema error."""
    where = _where(error.absolute_path)
    validator = error.validator
    if validator == "required":
        missing = next((k for k in error.validator_value if k not in error.instance), "?")
        key = f"{where}.{missing}" if error.absolute_path else missing
        return f"{source} is missing the key {key!r}."
    if validator == "const":
        return f"{source}: {where} must be {error.validator_value!r}; got {error.instance!r}."
    if validator == "enum":
        allowed = ", ".join(map(repr, error.validator_value))
        return f"{source}: {where} must be one of {allowed}; got {error.instance!r}."
    if validator == "type":
        allowed = error.validator_value
        expected = allowed if isinstance(allowed, str) else " or ".join(allowed)
        got = f"{type(error.instance).__name__} {error.instance!r:.60}"
        return f"{source}: {where} must be of type {expected}; got {got}."
    if validator in ("minimum", "maximum"):
        bound = ">=" if validator == "minimum" else "<="
        return f"{source}: {where} must be {bound} {error.validator_value}; got {error.instance!r}."
    if validator == "minItems":
        return f"{source}: {where} must hold at least {error.validator_value} item(s); got {len(error.instance)}."
    if validator == "anyOf":
        forms = " or ".join(_describe(sub) for sub in error.validator_value)
        return f"{source}: {where} must be {forms}; got {error.instance!r:.60}."
    if validator == "pattern" and where == "schema_version":
        return (f"{source} has schema_version {error.instance!r}, but this fedaudit reads version 1.x; "
                "re-run the audit with this fedaudit version.")
    message = error.message.splitlines()[0] if error.message else "is invalid"
    return f"{source}: {where} is invalid ({message.rstrip('.')})."


@cache
def _validator(name: str) -> Any:
    import jsonschema

    schema = schema_document(name)
    return jsonschema.validators.validator_for(schema)(schema)


def _validate(document: Any, name: str, source: str) -> None:
    import jsonschema

    errors = list(_validator(name).iter_errors(document))
    if errors:
        # The most specific error: deepest path first, then by schema order for a stable choice.
        best = jsonschema.exceptions.best_match(errors)
        raise ReportError(_sentence(best, source))


def _check_intervals(results: Mapping[str, Any], source: str) -> None:
    for i, cell in enumerate(results["cells"]):
        for j, attack in enumerate(cell["attacks"]):
            for group in ("layers", "n_updates"):
                for key, r in (attack.get(group) or {}).items():
                    lo, hi = r["ci_low"], r["ci_high"]
                    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi, r["asr"])) or lo > hi:
                        raise ReportError(
                            f"{source}: cells[{i}].attacks[{j}].{group}.{key} has the interval "
                            f"[{lo!r}, {hi!r}]; ci_low must be a number <= ci_high."
                        )


def validate_results(results: Any, *, source: str = "results.json") -> None:
    """Check that ``results`` follows the ``fedaudit.audit_results`` schema, version 1.x.

    Parameters
    ----------
    results
        The parsed results document.
    source
        How to name the document in the error message.

    Raises
    ------
    ReportError
        With one sentence naming the key at fault.
    """
    if not isinstance(results, Mapping):
        raise ReportError(f"{source} must hold a JSON object; got {type(results).__name__}.")
    if results.get("schema") != RESULTS_SCHEMA:
        raise ReportError(
            f"{source} has schema {results.get('schema')!r}, not {RESULTS_SCHEMA!r}; "
            "pass the results folder that `fedaudit audit` wrote."
        )
    _validate(results, RESULTS_SCHEMA, source)
    _check_intervals(results, source)


def validate_report(report: Any, *, source: str = "the report") -> None:
    """Check that ``report`` (a report's JSON form) follows the ``fedaudit.leakage_report`` schema.

    Raises
    ------
    ReportError
        With one sentence naming the key at fault.
    """
    _validate(report, REPORT_SCHEMA, source)


def load_results(path: str | PathLike[str]) -> dict[str, Any]:
    """Read and validate ``results.json`` from a results folder (or the file itself).

    Parameters
    ----------
    path
        ``RESULTS_DIR`` as written by ``fedaudit audit``, or its ``results.json``.

    Returns
    -------
    dict
        The results, validated against the ``fedaudit.audit_results`` schema.

    Raises
    ------
    ReportError
        When the file is missing, is not JSON, or breaks the schema.
    """
    p = Path(path)
    file = p / "results.json" if p.is_dir() else p
    if not file.is_file():
        where = f"{p} holds no results.json" if p.is_dir() else f"{p} does not exist"
        raise ReportError(f"{where}; run `fedaudit audit --out {p}` first, or pass the folder it wrote.")
    try:
        results = json.loads(file.read_text("utf-8"))
    except UnicodeDecodeError:
        raise ReportError(f"{file} is not UTF-8 text; pass the results.json that `fedaudit audit` wrote.") from None
    except json.JSONDecodeError as err:
        raise ReportError(
            f"{file} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg.lower()})."
        ) from None
    validate_results(results, source=str(file))
    return results
