"""`fedaudit report`: outputs, exit codes, overwrite refusal, and one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fedaudit.cli.report import EXIT_LEAKAGE_ABOVE, report
from tests.report.conftest import write_results

runner = CliRunner()
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(report)


@app.callback()
def _root() -> None:
    """A stand-in for fedaudit's app, with `report` as its only command."""


def _run(*args: str | Path) -> Any:
    return runner.invoke(app, ["report", *map(str, args)], catch_exceptions=False)


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def test_writes_every_format_into_results_dir_report_by_default(results_dir: Path) -> None:
    res = _run(results_dir)
    assert res.exit_code == 0, res.output
    folder = results_dir / "report"
    assert {"report.html", "report.md", "report.json"} <= {p.name for p in folder.iterdir()}
    assert "wrote report.html, report.md, report.json in" in res.output and "report.html" in res.output
    assert "The highest attack success rate in the table is 97%" in res.output


def test_format_and_out(results_dir: Path, tmp_path: Path) -> None:
    res = _run(results_dir / "results.json", "--out", tmp_path / "rep", "--format", "json")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.json"]
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["schema_version"] == "1.1.0"


def test_fail_above_exits_4_after_writing_and_names_the_settings(results_dir: Path, tmp_path: Path) -> None:
    res = _run(results_dir, "--out", tmp_path / "rep", "--fail-above", "0.8")
    assert res.exit_code == EXIT_LEAKAGE_ABOVE == 4, res.output
    assert (tmp_path / "rep" / "report.json").is_file() and (tmp_path / "rep" / "report.html").is_file()
    assert "4 of 6 settings have an ASR upper 95% bound above 80%" in res.output
    for failing in ("fedsgd (", "fedavg (", "fedsgd-sefl (", "fedsgd-6clients ("):
        assert f"  {failing}" in res.output
    assert "fedsgd-udp-eps10 (" not in res.output and "fedsgd-udp-eps1000 (" not in res.output


def test_fail_above_passes_when_every_bound_is_below(results_dir: Path, tmp_path: Path) -> None:
    res = _run(results_dir, "--out", tmp_path / "rep", "--fail-above", "1.0")
    assert res.exit_code == 0, res.output
    assert "pass: every setting's ASR upper 95% bound is at most 100%" in res.output


def test_fail_above_out_of_range_is_a_usage_error(results_dir: Path) -> None:
    assert _run(results_dir, "--fail-above", "60").exit_code == 2


def test_refuses_to_overwrite_without_force(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    assert _run(results_dir, "--out", out).exit_code == 0
    before = (out / "report.json").read_text()
    res = _run(results_dir, "--out", out)
    assert res.exit_code == 2
    line = _error_line(res.output)
    assert f"{out / 'report.html'} already exists" in line and "--force" in line
    assert (out / "report.json").read_text() == before
    assert _run(results_dir, "--out", out, "--force").exit_code == 0


def test_missing_results_is_one_sentence(tmp_path: Path) -> None:
    res = _run(tmp_path / "nowhere")
    assert res.exit_code == 1
    assert "does not exist" in _error_line(res.output)
    res = _run(tmp_path)
    assert res.exit_code == 1 and "holds no results.json" in _error_line(res.output)


def test_invalid_json_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{not json")
    res = _run(tmp_path)
    assert res.exit_code == 1 and "is not valid JSON" in _error_line(res.output)


def test_schema_violation_names_the_key(tmp_path: Path, results: dict[str, Any]) -> None:
    del results["cells"][3]["cost"]
    res = _run(write_results(tmp_path / "r", results))
    assert res.exit_code == 1 and "'cells[3].cost'" in _error_line(res.output)
    assert not (tmp_path / "r" / "report").exists()


@pytest.mark.parametrize("formats", ["pdf", "html,latex"])
def test_unknown_format_is_a_usage_error(results_dir: Path, formats: str) -> None:
    res = _run(results_dir, "--format", formats)
    assert res.exit_code == 2 and "html, md, json" in _error_line(res.output)


def test_the_command_module_imports_nothing_heavy() -> None:
    """`fedaudit --help` stays fast: the report's libraries load only when the command runs."""
    code = ("import sys, fedaudit.cli.report; heavy = {'matplotlib', 'jinja2', 'jsonschema', 'fedaudit.report', "
            "'torch', 'numpy'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
