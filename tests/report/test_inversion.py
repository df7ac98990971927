"""The report's inversion section: rendered from the inversions in the results JSON; old results still render."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fedaudit.report import (
    LeakageReport,
    ReportError,
    build_report,
    validate_report,
    validate_results,
    write_html,
    write_markdown,
)
from fedaudit.report.build import metric_verdict


def inversion(method: str = "analytic", *, view: str = "server") -> dict[str, Any]:
    """An inversion as the audit writes it (InversionResult.summary()): two figures beat chance, one does not."""
    return {
        "schema": "fedaudit.inversion", "schema_version": "1.0.0", "method": method, "produces": ["features"],
        "n_clients": 8, "n_clients_total": 32, "n_updates": 24, "updates_per_client": 3, "view": view,
        "algorithm": "fedsgd", "normalization": "global", "feature_set": "emobase", "label_truth": None,
        "metrics": [
            {"name": "cosine", "label": "cosine similarity to the matched utterance", "value": 0.93,
             "ci_low": 0.90, "ci_high": 0.95, "chance": 0.12, "higher_is_better": True, "unit": None, "n": 24},
            {"name": "speaker_id", "label": "nearest-speaker identification", "value": 0.71, "ci_low": 0.55,
             "ci_high": 0.84, "chance": 0.03, "higher_is_better": True, "unit": "fraction", "n": 24},
            {"name": "gender", "label": "gender of reconstructions", "value": 0.58, "ci_low": 0.38, "ci_high": 0.76,
             "chance": 0.5, "higher_is_better": True, "unit": "fraction", "n": 24},
        ],
        "feature_errors": [
            {"name": "F0_sma_amean", "error": 4.1, "ci_low": 3.0, "ci_high": 5.5, "chance": 31.0, "unit": "Hz"},
            {"name": "pcm_loudness_sma_amean", "error": 0.05, "ci_low": 0.03, "ci_high": 0.07, "chance": 0.31,
             "unit": None},
        ],
        "caveats": ["FedSGD records the gradient of one mini-batch but not which utterances were in it."],
        "reconstruct_seconds": 1.5, "seed": 0,
    }


def _write(report: dict[str, Any], folder: Path) -> None:
    """HTML and Markdown without drawing the plots (the section has none; the plot tests cover them)."""
    write_html(report, folder / "report.html", plots={})
    write_markdown(report, folder / "report.md", plots={})


@pytest.fixture
def with_inversions(results: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(results)
    out["schema_version"] = "1.1.0"
    out["cells"][0]["inversions"] = [inversion()]
    out["cells"][4]["inversions"] = [inversion("labels", view="key holder")]
    return out


def test_inversions_become_a_report_section_with_intervals_and_chance(with_inversions: dict[str, Any]) -> None:
    validate_results(with_inversions)
    report = build_report(with_inversions)
    assert [(i.setting, i.method) for i in report.inversions] == [("fedsgd", "analytic"), ("fedsgd-sefl", "labels")]
    first = report.inversions[0]
    assert [m.verdict for m in first.metrics] == ["beats chance", "beats chance", "indistinguishable from chance"]
    assert "0.93 (95% CI 0.90-0.95, chance 0.12: beats chance)" in first.sentence
    assert "71% (95% CI 55-84%, chance 3%" in first.sentence
    assert "holder of the decryption key" in report.inversions[1].sentence
    assert any(s.startswith("Reconstruction (analytic and labels): 2 of 2 inversions") for s in report.summary)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    validate_report(data)
    assert LeakageReport.from_dict(data) == report


def test_html_and_markdown_show_every_figure(with_inversions: dict[str, Any], tmp_path: Path) -> None:
    _write(build_report(with_inversions).to_dict(), tmp_path)
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    for text in (html, md):
        assert "Reconstruction of client data" in text
        assert "nearest-speaker identification" in text and "indistinguishable from chance" in text
        assert "F0_sma_amean 4.10 Hz (chance 31.00 Hz)" in text
    assert html.count('class="inversion"') == 2 and 'data-metric="speaker_id"' in html
    assert "| cosine similarity to the matched utterance | 0.93 | 0.90-0.95 | 0.12 | beats chance | 24 |" in md


def test_results_without_inversions_render_without_the_section(results: dict[str, Any], tmp_path: Path) -> None:
    assert results["schema_version"] == "1.0.0" and not any("inversions" in c for c in results["cells"])
    report = build_report(results)
    assert report.inversions == ()
    _write(report.to_dict(), tmp_path)
    assert "Reconstruction of client data" not in (tmp_path / "report.html").read_text()
    assert "Reconstruction of client data" not in (tmp_path / "report.md").read_text()


def test_a_report_of_version_1_0_without_inversions_still_loads(results: dict[str, Any]) -> None:
    data = build_report(results).to_dict()
    del data["inversions"]
    data["schema_version"] = "1.0.0"
    validate_report(data)
    assert LeakageReport.from_dict(data).inversions == ()


def test_a_broken_inversion_is_one_sentence_naming_the_key(with_inversions: dict[str, Any]) -> None:
    del with_inversions["cells"][0]["inversions"][0]["metrics"][1]["chance"]
    with pytest.raises(ReportError) as err:
        validate_results(with_inversions)
    message = str(err.value)
    assert "\n" not in message and "cells[0].inversions[0].metrics[1].chance" in message, message


@pytest.mark.parametrize(("metric", "verdict"), [
    ({"ci_low": 0.2, "ci_high": 0.3, "chance": 0.25, "higher_is_better": True}, "indistinguishable from chance"),
    ({"ci_low": 0.1, "ci_high": 0.2, "chance": 0.25, "higher_is_better": True}, "worse than chance"),
    ({"ci_low": 1.0, "ci_high": 2.0, "chance": 3.0, "higher_is_better": False}, "beats chance"),
    ({"ci_low": 4.0, "ci_high": 5.0, "chance": 3.0, "higher_is_better": False}, "worse than chance"),
    ({"ci_low": None, "ci_high": 5.0, "chance": 3.0, "higher_is_better": False}, "indistinguishable from chance"),
])
def test_verdict_reads_the_interval_on_the_better_side(metric: dict[str, Any], verdict: str) -> None:
    assert metric_verdict(metric) == verdict


def test_the_section_in_a_real_browser(with_inversions: dict[str, Any], tmp_path: Path) -> None:
    """Headless Chromium: no console error, both inversion tables shown, every figure's row present."""
    from tests.report.test_browser import ARGUMENTS, CHROMEDRIVER, CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    write_html(build_report(with_inversions).to_dict(), tmp_path / "report" / "report.html", plots={})
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (*ARGUMENTS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get((tmp_path / "report" / "report.html").as_uri())
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        tables = driver.find_elements(By.CSS_SELECTOR, "#inversions table.inversion-scores")
        assert len(tables) == 2 and all(t.is_displayed() and t.size["width"] > 0 for t in tables)
        rows = tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [r.get_attribute("data-metric") for r in rows] == ["cosine", "speaker_id", "gender"]
        assert rows[1].find_element(By.TAG_NAME, "strong").text == "71%"
    finally:
        driver.quit()
