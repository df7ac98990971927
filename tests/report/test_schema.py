"""The results schema accepts what the audit writes and rejects broken variants with one sentence."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedaudit.report import ReportError, build_report, load_results, schema_document, validate_results

ROOT = Path(__file__).resolve().parents[2]


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    assert "Traceback" not in message and "Failed validating" not in message, message


def test_the_fixture_is_valid(results: dict[str, Any]) -> None:
    validate_results(results)


def test_unknown_keys_are_allowed_within_the_major_version(results: dict[str, Any]) -> None:
    results["schema_version"] = "1.3.0"
    results["extra"] = {"anything": 1}
    results["cells"][0]["attacks"][0]["layers"]["fc1"]["brier"] = 0.1
    validate_results(results)


def _drop(*path: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            d = d[key]
        del d[path[-1]]
    return mutate


def _set(value: Any, *path: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return mutate


BROKEN = {
    "no cells": (_drop("cells"), "'cells'"),
    "no ci_low": (_drop("cells", 0, "attacks", 0, "layers", "fc1", "ci_low"), "cells[0].attacks[0].layers.fc1.ci_low"),
    "no synthetic flag": (_drop("setup", "synthetic"), "setup.synthetic"),
    "unknown view": (_set("client", "cells", 4, "view"), "cells[4].view"),
    "clients as text": (_set("32", "cells", 0, "n_clients"), "cells[0].n_clients"),
    "asr above one": (_set(1.5, "cells", 1, "attacks", 0, "layers", "fc2", "asr"),
                      "cells[1].attacks[0].layers.fc2.asr"),
    "privacy level": (_set("client", "cells", 2, "privacy", 0, "level"), "cells[2].privacy[0].level"),
    "n_updates word": (_set("most", "cells", 0, "attacks", 0, "n_updates", "all", "n_updates"),
                       "cells[0].attacks[0].n_updates.all.n_updates"),
    "no cell at all": (_set([], "cells"), "cells"),
    "newer major version": (_set("2.0.0", "schema_version"), "schema_version"),
    "other schema": (_set("fedaudit.leakage_report", "schema"), "schema"),
    "interval upside down": (_set(0.99, "cells", 0, "attacks", 0, "layers", "fc3", "ci_low"),
                             "cells[0].attacks[0].layers.fc3"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_results_are_rejected_naming_the_key(results: dict[str, Any], case: str) -> None:
    mutate, key = BROKEN[case]
    mutate(results)
    with pytest.raises(ReportError) as err:
        validate_results(results)
    message = str(err.value)
    _one_sentence(message)
    assert key in message, message


def test_a_newer_major_version_says_what_to_do(results: dict[str, Any]) -> None:
    results["schema_version"] = "2.0.0"
    with pytest.raises(ReportError, match="reads version 1.x"):
        validate_results(results)


def test_load_results_from_folder_or_file(results_dir: Path, results: dict[str, Any]) -> None:
    assert load_results(results_dir) == results
    assert load_results(results_dir / "results.json") == results


def test_load_results_reads_nan_as_written_by_python(tmp_path: Path, results: dict[str, Any]) -> None:
    results["cells"][0]["attacks"][0]["layers"]["fc1"]["auc"] = float("nan")
    (tmp_path / "results.json").write_text(json.dumps(results))  # json writes NaN, as Python does
    loaded = load_results(tmp_path)
    auc = loaded["cells"][0]["attacks"][0]["layers"]["fc1"]["auc"]
    assert auc != auc  # NaN
    assert build_report(loaded).settings[0].leakage.auc is None


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "not json", "not utf-8", "a list"])
def test_unreadable_results_are_one_sentence(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "results"
    if case != "missing folder":
        folder.mkdir()
    contents = {"not json": b'{"schema": "fedaudit.audit_results",', "not utf-8": b"\xff\xfe\x00{",
                "a list": b"[1, 2]"}
    if case in contents:
        (folder / "results.json").write_bytes(contents[case])
    with pytest.raises(ReportError) as err:
        load_results(folder)
    _one_sentence(str(err.value))
    assert str(folder) in str(err.value)


def test_missing_results_name_the_next_step(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="fedaudit audit --out"):
        load_results(tmp_path)


def test_schema_files_ship_and_docs_hold_the_same_copies() -> None:
    for name, file in (("fedaudit.audit_results", "audit_results.schema.json"),
                       ("fedaudit.leakage_report", "leakage_report.schema.json")):
        shipped = schema_document(name)
        assert shipped["$schema"].startswith("https://json-schema.org/draft/2020-12")
        assert json.loads((ROOT / "docs" / "schemas" / file).read_text()) == shipped, f"docs/schemas/{file} is stale"


def test_an_unknown_schema_name_is_a_sentence() -> None:
    with pytest.raises(ReportError, match="fedaudit ships"):
        schema_document("fedaudit.other")

