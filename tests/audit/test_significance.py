"""The permutation test against gender-free shadow labellings, the shadow-run jackknife, and the warnings
on degenerate setups."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedaudit.audit import record_run
from fedaudit.audit.attack import attack_target, fit_attack, setup_warnings, shadow_speaker_warnings
from fedaudit.audit.significance import (
    RelabelledStore,
    asr_statistic,
    permutation_test,
    shadow_jackknife,
    shadow_speakers,
)
from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore
from tests.conftest import make_table

N = 4  # smallest p-value 1/5: enough to tell a real leak from none on these small recordings


def _record(path: Path, *, seed: int, table_seed: int, shuffle: bool = False, n_speakers: int = 20,
            client_fraction: float = 0.25) -> Path:
    table = make_table(n_speakers=n_speakers, per_speaker=24, n_features=16, seed=table_seed)
    if shuffle:  # genders that carry no information about the updates
        rng = np.random.default_rng(seed + 99)
        speakers = np.unique(table.speaker_id)
        genders = np.array(["F", "M"] * (len(speakers) // 2))
        rng.shuffle(genders)
        of = dict(zip(speakers.tolist(), genders.tolist(), strict=True))
        table = dataclasses.replace(table, gender=np.array([of[s] for s in table.speaker_id]))
    cfg = FLConfig(algorithm="fedsgd", rounds=15, client_fraction=client_fraction, hidden=(32, 16), seed=seed)
    record_run(cfg, table, path)
    return path


@pytest.fixture(scope="module")
def shuffled_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _record(tmp_path_factory.mktemp("null") / "target.h5", seed=0, table_seed=2, shuffle=True)


def test_relabelled_view_changes_the_genders_only(shadow_stores) -> None:
    store = shadow_stores[0]
    flipped = np.where(store.ground_truth()["gender"] == "F", "M", "F")
    view = RelabelledStore(store, flipped)
    assert view.ground_truth()["gender"].tolist() == flipped.tolist()
    assert view.ground_truth()["speaker_id"].tolist() == store.ground_truth()["speaker_id"].tolist()
    assert np.array_equal(view.param("fc1.weight", [0, 1]), store.param("fc1.weight", [0, 1]))
    assert isinstance(view, UpdateStore) and view.n_updates == store.n_updates
    view.close()  # the wrapped store stays open
    assert store.param("fc1.bias", [0]).shape[0] == 1
    with pytest.raises(InvalidParameterError, match="needs .* genders"):
        RelabelledStore(store, ["F"])


def test_a_real_leak_beats_every_relabelling_and_a_shuffled_target_does_not(
    shadow_stores, target_store, shuffled_target
) -> None:
    attack, _ = fit_attack("stats", shadows=shadow_stores)
    real = permutation_test(attack, shadows=shadow_stores, target=target_store, statistic=asr_statistic(),
                            n_permutations=N)["1"]
    assert real.n_permutations == N and real.p_value == pytest.approx(1 / (N + 1))
    assert real.observed > real.null_p95 and real.above_null > 0.2
    with UpdateStore.open(shuffled_target) as store:
        null = permutation_test(attack, shadows=shadow_stores, target=store, statistic=asr_statistic(),
                                n_permutations=N)["1"]
    assert null.p_value >= 0.4, null
    assert "not distinguishable from an attacker with meaningless labels" in null.verdict()
    # the null of the same attack on the same target does not depend on the target's labels' meaning
    assert abs(real.null_median - 0.5) < 0.25 and abs(null.null_median - 0.5) < 0.25


def test_refits_learn_the_relabelled_genders(shadow_stores, target_store) -> None:
    """The relabelling reaches the attack through its fit input: a refit on the complement flips the ASR."""
    attack, _ = fit_attack("stats", shadows=shadow_stores)
    speakers, genders = shadow_speakers(shadow_stores)
    assert len(speakers) == 20 and sorted(set(genders)) == ["F", "M"]
    swapped = [RelabelledStore(s, np.where(s.ground_truth()["gender"] == "F", "M", "F")) for s in shadow_stores]
    from fedaudit.audit.significance import refit

    flipped = refit(attack, swapped)
    score = asr_statistic()
    assert score(flipped, target_store)["1"] < 0.2 < 0.8 < score(attack, target_store)["1"]


def test_only_shadow_trained_attacks_are_tested(shadow_stores, target_store, public_table) -> None:
    inversion, _ = fit_attack("inversion", public=public_table, target=target_store)
    with pytest.raises(InvalidParameterError, match="shadow-trained attacks only"):
        permutation_test(inversion, shadows=shadow_stores, target=target_store, statistic=asr_statistic(),
                         n_permutations=2)


def test_jackknife_over_shadow_runs(shadow_stores, target_store) -> None:
    attack, _ = fit_attack("stats", shadows=shadow_stores)
    jack = shadow_jackknife(attack, shadows=shadow_stores, target=target_store, statistic=asr_statistic())["1"]
    assert len(jack.leave_one_out) == 3 and jack.ci_low <= jack.estimate <= jack.ci_high
    with pytest.raises(InvalidParameterError, match="at least 2"):
        shadow_jackknife(attack, shadows=shadow_stores[:1], target=target_store, statistic=asr_statistic())


def test_attack_and_leakage_commands_print_the_test(recordings) -> None:
    from fedaudit.cli.main import app

    shadows = [a for p in recordings["shadows"] for a in ("--shadow", str(p))]
    target = str(recordings["target"][0])
    out = CliRunner().invoke(app, ["attack", target, *shadows, "--permutations", "2", "--jackknife"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "permutation test of the single-update ASR" in text and "null median" in text
    assert "with N = 2 relabellings the test cannot reach p < 0.05" in text
    assert "interval over the attacker's shadow runs (jackknife, 3 runs)" in text
    out = CliRunner().invoke(app, ["leakage", target, *shadows, "--permutations", "2"])
    assert out.exit_code == 0, out.output
    assert "null median" in out.output and "fused ASR" in " ".join(out.output.split())
    bad = CliRunner().invoke(app, ["attack", target, "--attack", "inversion", "--permutations", "2"])
    assert bad.exit_code != 0 and "shadow-trained attacks only" in " ".join(bad.output.split())


def test_attack_target_reports_significance(recordings) -> None:
    report = attack_target(recordings["target"][0], shadows=recordings["shadows"], permutations=2)
    sig = report.significance["1"]
    assert sig.observed == report.results["1"].asr and sig.n_permutations == 2
    assert report.to_dict()["significance"]["1"]["p_value"] == pytest.approx(1 / 3)
    with pytest.raises(InvalidParameterError, match="integer >= 0"):
        attack_target(recordings["target"][0], shadows=recordings["shadows"], permutations=-1)


def test_degenerate_setups_are_warned(tmp_path: Path) -> None:
    target = _record(tmp_path / "target.h5", seed=0, table_seed=2, n_speakers=6, client_fraction=0.01)
    shadow = _record(tmp_path / "shadow.h5", seed=1, table_seed=1, n_speakers=6)
    notes = " ".join(setup_warnings(target, [shadow]))
    assert "Only" in notes and "clients sent updates" in notes  # fewer than 10 target clients
    assert "At most 1 client per round" in notes
    assert "The shadow runs hold only" in notes and "speakers" in notes
    one = shadow_speaker_warnings(["F", "M", "M", "M", "M", "M", "M", "M", "M"])
    assert one == ["The shadow runs hold 1 female speaker: the attack's notion of 'female' is that one speaker, so "
                   "its figure says little about gender; add shadow speakers of that gender."]
    assert shadow_speaker_warnings(["F", "M"] * 4) == []
