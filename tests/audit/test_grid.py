"""The audit grid: plan, run, resume without recomputing, recompute only what a change touches,
and the same results from the local pool and from Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedaudit.audit.grid import AuditConfig, Setting, load_audit_config, plan_audit, run_audit
from fedaudit.exceptions import CorpusError, InvalidParameterError, OutputExistsError

FedAuditErrorTypes = (CorpusError, InvalidParameterError)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tiny(noise: float = 1.0) -> AuditConfig:
    return AuditConfig(
        rounds=3, shadow_runs=1, n_updates=(1, "all"), repeats=3,
        settings=(Setting(id="fedsgd"),
                  Setting(id="udp", defenses=("udp",), options={"noise_multiplier": noise, "clip": 1.0})),
    )


def _untimed(value):
    """Everything but wall-clock times (``*_seconds``) and where the files lie."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not k.endswith("_seconds") and k != "recording"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


class Events:
    def __init__(self) -> None:
        self.done: list[tuple[str, bool]] = []

    def __call__(self, event: str, data) -> None:
        if event == "done":
            self.done.append((data["label"], data["cached"]))

    @property
    def computed(self) -> list[str]:
        return sorted(label for label, cached in self.done if not cached)


def test_plan_shares_shadow_runs_and_labels_attackers() -> None:
    plan = plan_audit(tiny())
    # 2 targets, the fedsgd shadow run, the defense-aware udp shadow run: the undefended udp attacker
    # reuses the fedsgd shadow run.
    assert len(plan.recordings) == 4
    assert sorted(t.spec["attacker"] for t in plan.attacks) == [
        "defense-aware", "defense-aware", "public data", "public data", "undefended"]
    fedsgd_stats = next(t for t in plan.attacks if t.label == "fedsgd: stats attack (defense-aware)")
    udp_plain = next(t for t in plan.attacks if t.label == "udp: stats attack (undefended)")
    assert fedsgd_stats.spec["shadows"] == udp_plain.spec["shadows"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("audit")
    events = Events()
    results = run_audit(tiny(), out, jobs=2, progress=events)
    return out, results, events


def test_results_hold_every_setting_with_utility_leakage_privacy_cost(first_run) -> None:
    out, results, events = first_run
    assert len(events.computed) == 9
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["config_hash"] == results["config_hash"] and on_disk["schema"] == "fedaudit.audit_results"
    cells = {c["id"]: c for c in on_disk["cells"]}
    assert set(cells) == {"fedsgd", "udp"}
    assert cells["udp"]["privacy"][0]["mechanism"] == "udp"
    assert cells["fedsgd"]["privacy"] == []
    for cell in cells.values():
        assert 0.0 <= cell["utility"]["test_uar"] <= 1.0
        assert cell["cost"]["bytes_per_round"] == cell["cost"]["plain_bytes_per_round"] > 0
        stats = next(a for a in cell["attacks"] if a["attack"] == "stats")
        assert set(stats["layers"]) == {"fc1", "fc2", "fc3", "fused"}
        assert set(stats["n_updates"]) == {"1", "all"}
        r = stats["layers"]["fc1"]
        assert 0.0 <= r["ci_low"] <= r["asr"] <= r["ci_high"] <= 1.0 and r["chance"] >= 0.5
    undefended = next(a for a in cells["udp"]["attacks"] if a["attacker"] == "undefended")
    assert any("without the target's defense" in w for w in undefended["warnings"])


def test_a_second_run_recomputes_nothing(first_run) -> None:
    out, results, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*")}
    events = Events()
    again = run_audit(tiny(), out, jobs=2, progress=events)
    assert events.computed == [] and len(events.done) == 9
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*")} == before
    assert again["cells"] == results["cells"]


def test_changing_one_setting_recomputes_only_what_depends_on_it(first_run, tmp_path: Path) -> None:
    out, _, _ = first_run
    events = Events()
    run_audit(tiny(noise=2.0), out, jobs=2, progress=events, force=True)
    assert events.computed == sorted([
        "udp: target run", "udp: shadow run 1/1", "udp: stats attack (defense-aware)",
        "udp: stats attack (undefended)", "udp: inversion attack",
    ])


def test_results_of_another_configuration_are_not_replaced_without_force(first_run) -> None:
    out, _, _ = first_run
    with pytest.raises(OutputExistsError, match="another audit configuration"):
        run_audit(AuditConfig(rounds=2, shadow_runs=1, settings=(Setting(id="x"),)), out)


def test_ray_executor_gives_the_same_results_bit_for_bit(first_run, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out, results, _ = first_run
    ray_results = run_audit(tiny(), tmp_path / "ray", executor="ray", jobs=2)
    local = {c["id"]: _untimed(c) for c in results["cells"]}
    remote = {c["id"]: _untimed(c) for c in ray_results["cells"]}
    assert remote == local
    assert local["fedsgd"]["attacks"][0]["layers"]["fc1"]["asr"] is not None


def test_example_grids_load_and_bad_keys_are_one_sentence(tmp_path: Path) -> None:
    quick = load_audit_config(EXAMPLES / "audit-quick.toml")
    demo = load_audit_config(EXAMPLES / "audit-demo.toml")
    assert quick.rounds == 40 and len(quick.settings) == 3
    assert demo == AuditConfig()  # the file states the defaults
    bad = tmp_path / "bad.toml"
    bad.write_text('roundz = 3\n')
    with pytest.raises(InvalidParameterError, match=r"Unknown audit keys \['roundz'\]"):
        load_audit_config(bad)
    bad.write_text('[[settings]]\nid = "a"\n[[settings]]\nid = "a"\n')
    with pytest.raises(InvalidParameterError, match="unique"):
        load_audit_config(bad)
    bad.write_text("rounds = [")
    with pytest.raises(InvalidParameterError, match="not valid TOML"):
        load_audit_config(bad)


def test_results_validate_against_the_shipped_schema_and_make_a_report(first_run, tmp_path: Path) -> None:
    from fedaudit.report import build_report, validate_results, write_report

    out, results, _ = first_run
    validate_results(json.loads((out / "results.json").read_text()))
    report = build_report(results)
    written = write_report(report.to_dict(), tmp_path / "report")
    assert {p.suffix for p in written} >= {".html", ".md", ".json"}


def test_permutations_key_tests_shadow_attacks_and_the_report_says_it(tmp_path: Path) -> None:
    from fedaudit.report import build_report, validate_results

    config = AuditConfig(rounds=3, shadow_runs=1, n_updates=(1,), repeats=3, permutations=2,
                         settings=(Setting(id="fedsgd"),))
    stats = next(t for t in plan_audit(config).attacks if t.spec["attack"] == "stats")
    assert stats.spec["permutations"] == 2
    assert all("permutations" not in t.spec for t in plan_audit(config).attacks if t.spec["attack"] == "inversion")
    results = run_audit(config, tmp_path / "audit", jobs=2)
    validate_results(json.loads((tmp_path / "audit" / "results.json").read_text()))
    entries = {a["attack"]: a for a in results["cells"][0]["attacks"]}
    sig = entries["stats"]["significance"]
    assert sig["n_permutations"] == 2 and sig["p_value"] >= 1 / 3
    assert sig["observed"] == max(r["asr"] for r in entries["stats"]["layers"].values())
    assert sig["above_null"] == pytest.approx(sig["observed"] - sig["null_median"])
    assert "significance" not in entries["inversion"]
    report = build_report(results)
    assert any("Permutation test: " in line for line in report.summary)
    finding = report.findings[0]
    if finding.score.attack == "stats":
        assert "gender-free relabellings of its shadow speakers" in finding.sentence
    with pytest.raises(InvalidParameterError, match="'permutations' must be an integer >= 0"):
        AuditConfig(permutations=-1)


def test_a_bad_defense_option_is_refused_before_any_task_runs(tmp_path: Path) -> None:
    grid = AuditConfig(rounds=2, shadow_runs=1, attacks=("stats",), n_updates=(1,), repeats=2,
                       settings=(Setting(id="bad", defenses=("udp",), options={"noise_multiplier": 1.0,
                                                                               "clip": 1.0, "delta": 2.0}),))
    with pytest.raises(InvalidParameterError, match="Setting 'bad': The 'delta' parameter"):
        run_audit(grid, tmp_path / "out", jobs=1)
    assert not (tmp_path / "out" / "cache").exists()


def test_a_failing_task_is_one_sentence_and_keeps_what_finished(tmp_path: Path, monkeypatch) -> None:
    from fedaudit.audit import executors
    from fedaudit.audit.executors import TaskError

    grid = AuditConfig(rounds=2, shadow_runs=1, attacks=("inversion",), n_updates=(1,), repeats=2,
                       public_corpora=("nosuch-corpus",), settings=(Setting(id="fedsgd"),))
    events = Events()
    with pytest.raises(FedAuditErrorTypes) as info:
        run_audit(grid, tmp_path / "out", jobs=1, progress=events)
    assert "nosuch-corpus" in str(info.value) and "Traceback" not in str(info.value)
    assert events.computed == ["fedsgd: target run"]  # finished before the attack failed: kept
    assert executors.ResultCache(tmp_path / "out" / "cache").get("attacks", "x") is None
    assert TaskError.exit_code == 1
