"""JSON, Markdown and HTML outputs: schema-valid, self-contained, and never overwritten silently."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fedaudit.exceptions import InvalidParameterError, OutputExistsError
from fedaudit.report import ReportError, build_report, write_html, write_json, write_markdown, write_report
from fedaudit.report.render import parse_formats

SCHEMAS = Path(__file__).resolve().parents[2] / "fedaudit" / "report" / "schemas"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The fixture's report, written once in every format (plots are the slow part)."""
    from tests.report.conftest import make_results

    report = build_report(make_results()).to_dict()
    out = tmp_path_factory.mktemp("report")
    write_report(report, out)
    return report, out


def test_all_formats_are_written(written: tuple[dict[str, Any], Path]) -> None:
    _, out = written
    assert sorted(p.name for p in out.iterdir()) == [
        "report-asr-per-layer.svg", "report-asr-vs-epsilon.svg", "report-asr-vs-updates.svg",
        "report-utility-vs-leakage.svg", "report.html", "report.json", "report.md",
    ]


def test_json_output_validates_against_the_shipped_schema(written: tuple[dict[str, Any], Path]) -> None:
    report, out = written
    data = json.loads((out / "report.json").read_text())
    schema = json.loads((SCHEMAS / "leakage_report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)
    assert data == report
    assert "NaN" not in (out / "report.json").read_text()


def test_the_report_schema_rejects_a_broken_report(written: tuple[dict[str, Any], Path]) -> None:
    report, out = written
    broken = json.loads(json.dumps(report))
    broken["settings"][0]["severity"] = "critical"
    with pytest.raises(ReportError, match=r"settings\[0\].severity"):
        write_json(broken, out / "broken.json")
    assert not (out / "broken.json").exists()


def test_markdown_holds_the_summary_and_the_plots_beside_it(written: tuple[dict[str, Any], Path]) -> None:
    report, out = written
    md = (out / "report.md").read_text()
    for sentence in report["summary"]:
        assert sentence in md
    assert ("Updates of the first layer reveal the gender of 95% of clients (95% CI 88-100%, chance 50%) to the "
            "stats attack in FedSGD, no defense.") in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 4
    for name in images:
        assert (out / name).is_file() and ET.fromstring((out / name).read_bytes()).tag.endswith("svg")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(report["settings"])
    assert "fedaudit audit --config audit.toml --out results" in md


def test_html_is_self_contained(written: tuple[dict[str, Any], Path]) -> None:
    _, out = written
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 4
    for src in sources:
        assert src.startswith("data:image/svg+xml;base64,")
        assert ET.fromstring(base64.b64decode(src.split(",", 1)[1])).tag.endswith("svg")
    assert "@media print" in html and "@page" in html
    assert html.count('<tr data-setting="') == 6 and html.count('class="asr num"') == 6


def test_html_says_which_plots_are_skipped(tmp_path: Path, results: dict[str, Any]) -> None:
    results["cells"] = [results["cells"][1]]  # FedAvg, no DP
    report = build_report(results).to_dict()
    write_html(report, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "ASR against epsilon: not drawn. No setting has differential privacy with a claimed epsilon." in html
    assert html.count("<img ") == 3


def test_nothing_is_overwritten_without_force(tmp_path: Path, results: dict[str, Any]) -> None:
    report = build_report(results).to_dict()
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(OutputExistsError) as err:
        write_report(report, tmp_path)
    assert str(err.value) == f"{tmp_path / 'report.json'} already exists."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # nothing half-written
    assert (tmp_path / "report.json").read_text() == "{}"
    write_report(report, tmp_path, formats="json", force=True)
    assert json.loads((tmp_path / "report.json").read_text())["schema"] == "fedaudit.leakage_report"


@pytest.mark.parametrize("writer", [write_json, write_html, write_markdown])
def test_each_writer_refuses_an_existing_file(tmp_path: Path, results: dict[str, Any], writer: Any) -> None:
    path = tmp_path / "out.txt"
    path.write_text("keep")
    with pytest.raises(OutputExistsError, match="already exists"):
        writer(build_report(results).to_dict(), path)
    assert path.read_text() == "keep"


def test_a_plot_file_beside_the_markdown_is_not_overwritten(tmp_path: Path, results: dict[str, Any]) -> None:
    (tmp_path / "report-asr-per-layer.svg").write_text("mine")
    with pytest.raises(OutputExistsError, match="report-asr-per-layer.svg"):
        write_report(build_report(results).to_dict(), tmp_path, formats="md")
    assert not (tmp_path / "report.md").exists()


def test_renderers_take_the_json_form_only(tmp_path: Path, results: dict[str, Any]) -> None:
    with pytest.raises(ReportError, match="pass report.to_dict"):
        write_json(build_report(results), tmp_path / "r.json")  # type: ignore[arg-type]


@pytest.mark.parametrize(("given", "expected"), [
    ("html,md,json", ("html", "md", "json")), ("json, HTML", ("html", "json")), (["md"], ("md",)),
])
def test_format_names(given: Any, expected: tuple[str, ...]) -> None:
    assert parse_formats(given) == expected


@pytest.mark.parametrize("given", ["pdf", "html,docx", "", ","])
def test_unknown_format_names_are_a_usage_error(given: str) -> None:
    with pytest.raises(InvalidParameterError, match="html, md, json") as err:
        parse_formats(given)
    assert err.value.exit_code == 2


def test_plots_are_byte_for_byte_reproducible(results: dict[str, Any]) -> None:
    from fedaudit.report.plots import render_plots

    report = build_report(results).to_dict()
    report["settings"] = report["settings"][:2]
    report["plots"] = [p for p in report["plots"] if p["id"] == "asr-per-layer"]
    assert render_plots(report) == render_plots(report)
