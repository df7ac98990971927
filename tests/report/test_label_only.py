"""Beside each attribute attack, the label-only baseline and the leakage above it, when the audit ran it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fedaudit.report import LeakageReport, build_report, validate_report, write_html, write_markdown
from tests.report.conftest import r


def label_only(asr: float, lo: float, hi: float, *, attacker: str = "defense-aware") -> dict[str, Any]:
    return {"attack": "label-only", "attacker": attacker, "shadow_defenses": [], "layers": {"fused": r(asr, lo, hi)},
            "n_updates": {"1": r(asr, lo, hi)}, "fit_seconds": 0.4, "warnings": []}


@pytest.fixture
def with_baseline(results: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(results)
    out["cells"][0]["attacks"].append(label_only(0.60, 0.45, 0.74))  # stats 95% (88-100): beyond it
    out["cells"][1]["attacks"].append(label_only(0.70, 0.58, 0.82))  # stats 78% (66-88): within reach
    out["cells"][2]["attacks"].append(label_only(0.52, 0.40, 0.64))  # stats 56% (44-68): the attack is at chance
    return out


def test_each_attack_is_set_beside_the_baseline(with_baseline: dict[str, Any]) -> None:
    report = build_report(with_baseline)
    first = {(b.attack, b.attacker): b for b in report.settings[0].baselines}
    assert set(first) == {("stats", "defense-aware"), ("inversion", "public data")}
    stats = first[("stats", "defense-aware")]
    assert stats.score.asr == 0.95 and stats.baseline.asr == 0.60
    assert stats.above == pytest.approx(0.35) and stats.beyond
    assert first[("inversion", "public data")].baseline.asr == 0.60  # no public-data baseline: the setting's best
    udp = {(b.attack, b.attacker): b for b in report.settings[2].baselines}
    assert udp[("stats", "defense-aware")].above == pytest.approx(0.04) and not udp[("stats", "defense-aware")].beyond
    assert udp[("stats", "undefended")].baseline.attacker == "defense-aware"
    assert udp[("stats", "defense-aware")].reading == "attack at chance"
    second = {(b.attack, b.attacker): b for b in report.settings[1].baselines}
    assert second[("stats", "defense-aware")].reading == "within reach of the label mix"
    assert stats.reading == "beyond the label mix"
    assert report.settings[3].baselines == ()  # no label-only result in that cell
    finding = next(f for f in report.findings if f.setting == "fedsgd")
    assert "label-only baseline" in finding.sentence and "35 points above it" in finding.sentence
    assert "underestimates a skew once the model is accurate" in finding.sentence  # "beyond" is no clearance
    assert "60% (95% CI 45-74%, chance 50%)" in finding.sentence
    at_chance = next(f for f in report.findings if f.setting == report.settings[2].id)
    assert "the attack itself is indistinguishable from chance, so there is no leakage here" in at_chance.sentence
    assert "reading emotions" not in at_chance.sentence
    within = next(f for f in report.findings if f.setting == report.settings[1].id)
    assert "may be reading emotions rather than voices" in within.sentence
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    validate_report(data)
    assert LeakageReport.from_dict(data) == report


def test_the_baseline_table_renders(with_baseline: dict[str, Any], tmp_path: Path) -> None:
    data = build_report(with_baseline).to_dict()
    write_html(data, tmp_path / "report.html", plots={})
    write_markdown(data, tmp_path / "report.md", plots={})
    html, md = (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()
    assert html.count('<tr data-setting="fedsgd" data-attack=') == 2 and "+35 points" in html
    assert "| FedSGD, no defense | stats (defense-aware) | 95% (88-100%) | 60% (45-74%) | +35 points | beyond the label mix |" in md
    assert "| +8 points | within reach of the label mix |" in md and "| +4 points | attack at chance |" in md
    assert "attack at chance" in html and "within reach of the label mix" in html


def test_without_a_label_only_result_there_is_no_baseline(results: dict[str, Any], tmp_path: Path) -> None:
    report = build_report(results)
    assert all(st.baselines == () for st in report.settings)
    write_html(report.to_dict(), tmp_path / "report.html", plots={})
    assert "label-only" not in (tmp_path / "report.html").read_text()
