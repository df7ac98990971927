"""Findings, severity, caveats and the table of the report, computed from the results."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from fedaudit.report import LeakageReport, ReportError, build_report, settings_above, severity_of
from tests.report.conftest import r


def _kinds(report: LeakageReport, kind: str) -> set[str | None]:
    return {c.setting for c in report.caveats if c.kind == kind}


# -- severity and findings -------------------------------------------------------------------------
@pytest.mark.parametrize(("ci_low", "chance", "expected"), [
    (0.75, 0.5, "high"), (0.7499, 0.5, "medium"), (0.60, 0.5, "medium"), (0.5999, 0.5, "low"),
    (0.5001, 0.5, "low"), (0.50, 0.5, "none"), (0.20, 0.5, "none"), (0.85, 0.6, "high"), (0.69, 0.6, "low"),
])
def test_severity_reads_the_lower_bound_against_chance(ci_low: float, chance: float, expected: str) -> None:
    assert severity_of(ci_low, chance) == expected


def test_findings_are_ranked_by_severity_then_margin(results: dict[str, Any]) -> None:
    report = build_report(results)
    assert [(f.setting, f.severity) for f in report.findings] == [
        ("fedsgd-sefl", "high"), ("fedsgd", "high"), ("fedavg", "medium"), ("fedsgd-udp-eps1000", "low"),
        ("fedsgd-6clients", "none"), ("fedsgd-udp-eps10", "none"),
    ]


def test_a_finding_is_a_plain_sentence_with_interval_and_chance(results: dict[str, Any]) -> None:
    by_id = {f.setting: f for f in build_report(results).findings}
    assert by_id["fedsgd"].sentence == (
        "Updates of the first layer reveal the gender of 95% of clients (95% CI 88-100%, chance 50%) "
        "to the stats attack in FedSGD, no defense."
    )
    assert "as seen by a holder of the decryption key" in by_id["fedsgd-sefl"].sentence


def test_an_interval_including_chance_is_indistinguishable_never_safe(results: dict[str, Any]) -> None:
    report = build_report(results)
    for f in report.findings:
        if f.severity == "none":
            assert f.sentence.endswith("indistinguishable from chance."), f.sentence
            assert "(95% CI 44-68%, chance 50%)" in f.sentence or "(95% CI 50-100%, chance 50%)" in f.sentence
    text = " ".join([*report.summary, *(f.sentence for f in report.findings)]).lower()
    for claim in ("is safe", "are safe", "safe setting", "no leakage"):
        assert claim not in text


def test_a_setting_wholly_below_chance_says_mis_calibrated(results: dict[str, Any]) -> None:
    cell = results["cells"][2]
    cell["attacks"] = [cell["attacks"][1]]  # only the undefended attacker, 38% (24-52%)
    for layer in cell["attacks"][0]["layers"].values():
        layer.update(ci_high=0.45)
    finding = next(f for f in build_report(results).findings if f.setting == "fedsgd-udp-eps10")
    assert finding.severity == "none" and "below chance" in finding.sentence and "mis-calibrated" in finding.sentence


def test_summary_names_the_highest_asr_of_the_table(results: dict[str, Any]) -> None:
    report = build_report(results)
    top = max(report.settings, key=lambda s: s.leakage.asr)
    assert top.id == "fedsgd-sefl"
    highest = "The highest attack success rate in the table is 97% (95% CI 91-100%, chance 50%), in FedSGD, SEFL"
    assert highest in " ".join(report.summary)
    assert "2 high, 1 medium and 1 low severity, and 2 indistinguishable from chance" in " ".join(report.summary)


def test_summary_of_defended_settings_all_at_chance(results: dict[str, Any]) -> None:
    results["cells"] = [results["cells"][0], results["cells"][2]]
    summary = " ".join(build_report(results).summary)
    assert "No defended setting leaks measurably more than chance" in summary and "does not make it safe" in summary


# -- the table -------------------------------------------------------------------------------------
def test_the_table_holds_every_cell_in_order(results: dict[str, Any]) -> None:
    report = build_report(results)
    assert [s.id for s in report.settings] == [c["id"] for c in results["cells"]]
    for st, cell in zip(report.settings, results["cells"], strict=True):
        singles = [res for a in cell["attacks"] for res in a["layers"].values()]
        assert st.leakage.asr == max(x["asr"] for x in singles)
        everything = singles + [res for a in cell["attacks"] for res in a["n_updates"].values()]
        assert st.worst_upper.ci_high == max(x["ci_high"] for x in everything)
        assert st.utility.test_uar == cell["utility"]["test_uar"]
        assert st.cost.wall_seconds == cell["cost"]["wall_seconds"]
        assert len(st.scores) == len(everything)
    udp = report.settings[2]
    eps = list(results["cells"][2]["privacy"][0]["epsilon_per_client"].values())
    assert udp.privacy[0].epsilon_median == pytest.approx(statistics.median(eps))
    assert udp.privacy[0].epsilon_max == pytest.approx(max(eps)) and udp.privacy[0].delta == 1e-5
    assert report.settings[0].privacy == ()
    inversion = [s for s in report.settings[0].scores if s.attack == "inversion"]
    assert [(s.layer, s.auc, s.attacker) for s in inversion] == [("fc1", None, "public data")]


def test_nan_auc_becomes_null_and_the_json_form_is_strict(results: dict[str, Any]) -> None:
    results["cells"][0]["attacks"][0]["layers"]["fc1"]["auc"] = float("nan")
    report = build_report(results)
    assert report.settings[0].leakage.auc is None
    json.dumps(report.to_dict(), allow_nan=False)


def test_json_form_round_trips(results: dict[str, Any]) -> None:
    report = build_report(results)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == "fedaudit.leakage_report" and data["schema_version"] == "1.1.0"
    again = LeakageReport.from_dict(data)
    assert again == report and again.to_dict() == data


def test_from_dict_refuses_another_major_version(results: dict[str, Any]) -> None:
    data = build_report(results).to_dict()
    data["schema_version"] = "2.0.0"
    with pytest.raises(ReportError, match="reads 1.x"):
        LeakageReport.from_dict(data)


def test_build_report_validates_its_input(results: dict[str, Any]) -> None:
    del results["cells"][0]["utility"]
    with pytest.raises(ReportError, match="cells\\[0\\].utility"):
        build_report(results)


def test_settings_above_gates_on_every_result(results: dict[str, Any]) -> None:
    data = build_report(results).to_dict()
    assert [f["id"] for f in settings_above(data, 0.8)] == ["fedsgd", "fedavg", "fedsgd-sefl", "fedsgd-6clients"]
    failed = {f["id"]: f for f in settings_above(data, 0.7)}
    # the multiple-update attack counts: UDP eps 10 is 68% at one update, 71% at all updates
    assert failed["fedsgd-udp-eps10"]["score"]["n_updates"] == "all" and failed["fedsgd-udp-eps10"]["ci_high"] == 0.71
    assert settings_above(data, 1.0) == []


# -- caveats: each appears exactly when its condition holds -----------------------------------------
def test_caveats_of_the_fixture(results: dict[str, Any]) -> None:
    report = build_report(results)
    assert _kinds(report, "synthetic") == {None}
    assert _kinds(report, "few_clients") == {"fedsgd-6clients"}
    assert _kinds(report, "wide_interval") == {"fedsgd-6clients"}
    assert _kinds(report, "key_holder_view") == {"fedsgd-sefl"}
    assert _kinds(report, "shadow_defense_differs") == {"fedsgd-udp-eps10"}
    assert _kinds(report, "below_chance") == {"fedsgd-udp-eps10"}
    assert {c.kind for c in report.caveats} == {"synthetic", "few_clients", "wide_interval", "key_holder_view",
                                                 "shadow_defense_differs", "below_chance", "warning"}
    assert f"{len(report.caveats)} caveats below qualify these figures." in report.summary


def test_every_warning_of_the_cells_is_a_caveat(results: dict[str, Any]) -> None:
    texts = [c.text for c in build_report(results).caveats if c.kind == "warning"]
    warnings = [w for cell in results["cells"] for w in cell["warnings"]]
    warnings += [w for cell in results["cells"] for a in cell["attacks"] for w in a["warnings"]]
    assert len(texts) == len(warnings) == 3
    for w in warnings:
        assert any(t.endswith(w) for t in texts), w


def _clean(results: dict[str, Any]) -> dict[str, Any]:
    """Real corpus, 32 clients everywhere, no SEFL, no undefended attacker, no warnings."""
    results["setup"]["synthetic"] = False
    results["cells"] = [c for c in results["cells"] if c["id"] not in ("fedsgd-sefl", "fedsgd-6clients")]
    results["cells"][2]["attacks"] = results["cells"][2]["attacks"][:1]
    for cell in results["cells"]:
        cell["warnings"] = []
        for a in cell["attacks"]:
            a["warnings"] = []
    return results


def test_no_caveat_without_its_condition(results: dict[str, Any]) -> None:
    report = build_report(_clean(results))
    assert report.caveats == ()
    assert not any("caveat" in s for s in report.summary)


@pytest.mark.parametrize(("n_clients", "expected"), [(9, True), (10, False)])
def test_few_clients_below_ten(results: dict[str, Any], n_clients: int, expected: bool) -> None:
    results = _clean(results)
    results["cells"][0]["n_clients"] = n_clients
    assert (_kinds(build_report(results), "few_clients") == {"fedsgd"}) is expected


@pytest.mark.parametrize(("hi", "expected"), [(0.80, False), (0.81, True)])
def test_wide_interval_above_thirty_points(results: dict[str, Any], hi: float, expected: bool) -> None:
    results = _clean(results)
    results["cells"][0]["attacks"][0]["layers"]["fc1"].update(asr=0.99, ci_low=0.50, ci_high=hi)
    assert (_kinds(build_report(results), "wide_interval") == {"fedsgd"}) is expected


def test_synthetic_corpus_caveat_follows_the_flag(results: dict[str, Any]) -> None:
    results = _clean(results)
    results["setup"]["synthetic"] = True
    assert _kinds(build_report(results), "synthetic") == {None}


def test_key_holder_view_caveat_follows_the_view(results: dict[str, Any]) -> None:
    results = _clean(results)
    results["cells"][1]["view"] = "key holder"
    assert _kinds(build_report(results), "key_holder_view") == {"fedavg"}


def test_undefended_attacker_on_an_undefended_cell_is_no_caveat(results: dict[str, Any]) -> None:
    results = _clean(results)
    results["cells"][0]["attacks"][0]["attacker"] = "undefended"
    assert _kinds(build_report(results), "shadow_defense_differs") == set()


def test_defense_aware_attacker_with_other_shadow_defenses_is_a_caveat(results: dict[str, Any]) -> None:
    results = _clean(results)
    results["cells"][2]["attacks"][0]["shadow_defenses"] = ["ldp"]
    caveats = [c for c in build_report(results).caveats if c.kind == "shadow_defense_differs"]
    assert [c.setting for c in caveats] == ["fedsgd-udp-eps10"]
    assert "learned from shadow runs with ldp, not the target's udp" in caveats[0].text


@pytest.mark.parametrize(("asr", "expected"), [(0.44, True), (0.46, False)])
def test_below_chance_caveat(results: dict[str, Any], asr: float, expected: bool) -> None:
    results = _clean(results)
    results["cells"][1]["attacks"][0]["layers"] = {"fc1": r(asr, 0.3, 0.6)}
    report = build_report(results)
    assert (_kinds(report, "below_chance") == {"fedavg"}) is expected
    if expected:
        assert "mis-calibrated" in next(c.text for c in report.caveats if c.kind == "below_chance")


# -- plots -----------------------------------------------------------------------------------------
def test_plots_are_skipped_with_a_reason_when_their_data_is_absent(results: dict[str, Any]) -> None:
    results["cells"] = [results["cells"][0]]
    results["cells"][0]["attacks"] = [results["cells"][0]["attacks"][1]]  # inversion: fc1 only, no n_updates
    results["cells"][0]["utility"]["test_uar"] = None
    plots = {p.id: p for p in build_report(results).plots}
    assert plots["asr-per-layer"].available and plots["asr-per-layer"].reason is None
    for pid in ("asr-vs-epsilon", "asr-vs-updates", "utility-vs-leakage"):
        assert not plots[pid].available and plots[pid].reason, pid


def test_every_plot_is_available_for_the_fixture(results: dict[str, Any]) -> None:
    assert all(p.available for p in build_report(results).plots)


def test_findings_summary_and_caveats_say_the_permutation_test(results) -> None:
    from fedaudit.report.build import build_report

    plain = build_report(results)
    assert any("No permutation test was run" in line for line in plain.summary)
    tested = json.loads(json.dumps(results))
    shadow = [a for c in tested["cells"] for a in c["attacks"] if a["attacker"] in ("defense-aware", "undefended")]
    for k, attack in enumerate(shadow):
        weak = k % 2 == 1
        attack["significance"] = {"p_value": 0.41 if weak else 1 / 21, "n_permutations": 20, "null_median": 0.5,
                                  "null_p95": 0.7, "above_null": 0.3}
    report = build_report(tested)
    line = next(line for line in report.summary if line.startswith("Permutation test:"))
    assert f"{(len(shadow) + 1) // 2} of {len(shadow)} shadow-trained attacks" in line
    sentences = " ".join(f.sentence for f in report.findings)
    assert ("significant at p = 0.048 (N = 20 gender-free relabellings of the shadow speakers)" in sentences
            or "not distinguishable from an attacker with meaningless labels (p = 0.41)" in sentences)
    assert all(c.kind != "not_significant" or "(p = 0.41)" in c.text for c in report.caveats)
