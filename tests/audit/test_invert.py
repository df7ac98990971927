"""The inversion step end to end on tiny recordings made here: a one-sample batch is recovered exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedaudit.audit import record_run
from fedaudit.audit.invert import (
    INVERSION_SCHEMA,
    default_output,
    invert_recording,
    read_inversion,
    run_truth,
    select_updates,
)
from fedaudit.config import FLConfig
from fedaudit.exceptions import CorpusError, InvalidParameterError, OutputExistsError
from fedaudit.record import UpdateStore
from tests.conftest import make_table

TABLE = dict(n_speakers=10, per_speaker=16, n_features=12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("invert")
    table = make_table(**TABLE, seed=3)
    out = {}
    for name, cfg in {
        "batch1": FLConfig(algorithm="fedsgd", rounds=6, batch_size=1, lr=0.01, client_fraction=0.5, hidden=(32, 16),
                           seed=0),
        "fedavg": FLConfig(algorithm="fedavg", rounds=3, local_epochs=2, optimizer="sgd", lr=0.01,
                           client_fraction=0.5, hidden=(32, 16), seed=0),
    }.items():
        record_run(cfg, table, root / f"{name}.h5")
        out[name] = root / f"{name}.h5"
    return out


@pytest.fixture
def table():
    return make_table(**TABLE, seed=3)


@pytest.fixture
def public():
    return make_table(**TABLE, seed=9)


def test_a_one_sample_batch_is_recovered_exactly(runs, table, public, tmp_path: Path) -> None:
    result = invert_recording(runs["batch1"], method="analytic", max_updates_per_client=2, seed=0, table=table,
                              public=public, out=tmp_path / "a.h5")
    cosine = result.metric("cosine")
    assert cosine is not None and cosine.value > 0.999 and cosine.ci_low > 0.999
    assert cosine.chance is not None and cosine.chance < 0.9  # matched to other clients' utterances instead
    assert result.metric("nmse").value < 1e-4 < result.metric("nmse").chance
    assert result.metric("recovered").value == 1.0
    ident = result.metric("identification")  # synthetic speakers differ little: above chance, not perfect
    assert ident.chance == pytest.approx(1 / 10) and ident.ci_low > ident.chance and ident.n == result.n_updates
    assert result.metric("gender").chance == 0.5
    with UpdateStore.open(runs["batch1"]) as store:
        senders = np.unique(store.index["client_id"])
        expected = sum(min(2, len(store.client_rows(int(c)))) for c in senders)
    assert result.n_clients == len(senders) < 10 and result.n_updates == expected and result.label_truth is None
    assert any("FedSGD records the gradient of one mini-batch" in c for c in result.caveats)
    assert any(f"Only {len(senders)} clients" in c for c in result.caveats)
    # The features' own units: the plot's pairs agree to float precision, and errors are far below chance.
    for client in result.examples["clients"]:
        np.testing.assert_allclose(client["reconstructed"], client["true"], rtol=1e-3, atol=1e-3)
    assert all(f.error < 0.01 * f.chance for f in result.feature_errors)
    stored = read_inversion(tmp_path / "a.h5")
    assert stored["index"]["row"].tolist() == list(result.rows)
    assert [len(f) for f in stored["features"]] == [1] * expected
    assert stored["config"]["method_config"]["seed"] == 0 and stored["config"]["seed"] == 0
    assert stored["scores"]["metrics"][0]["name"] == "cosine"


def test_the_result_has_a_versioned_json_form(runs, table, public) -> None:
    result = invert_recording(runs["batch1"], method="analytic", clients=[0, 4], max_updates_per_client=1,
                              table=table, public=public, write=False)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["schema"] == INVERSION_SCHEMA and data["schema_version"].startswith("1.")
    assert data["clients"] == [0, 4] and data["output"] is None
    summary = result.summary()
    assert "per_client" not in summary and "examples" not in summary and summary["metrics"] == data["metrics"]


def test_fedavg_label_counts_are_scored_against_the_exact_counts(runs, table) -> None:
    result = invert_recording(runs["fedavg"], method="labels", max_updates_per_client=1, table=table, write=False)
    assert result.label_truth == "exact"
    names = [m.name for m in result.metrics]
    assert names == ["labels_exact", "labels_mae"]
    with UpdateStore.open(runs["fedavg"]) as store:
        truth = run_truth(store, table=table)
        row = int(result.rows[0])
        cid, n = int(store.index["client_id"][row]), int(store.index["num_samples"][row])
        counts, how = truth.label_truth(cid, num_samples=n, kind="pseudo_gradient")
    assert how == "exact" and counts.sum() == n == 2 * truth.clients[cid].n_train  # two local epochs


def test_fedsgd_label_counts_use_the_training_proportions(runs, table) -> None:
    result = invert_recording(runs["batch1"], method="labels", max_updates_per_client=1, table=table, write=False)
    assert result.label_truth == "proportions"
    assert [m.name for m in result.metrics] == ["labels_mae_proportions"]
    assert any("training-set emotion proportions" in c for c in result.caveats)


def test_the_choice_of_updates_is_seeded_and_spread_across_the_run(runs) -> None:
    with UpdateStore.open(runs["batch1"]) as store:
        a = select_updates(store, per_client=2, seed=1)
        assert a.tolist() == select_updates(store, per_client=2, seed=1).tolist()
        for cid in np.unique(store.index["client_id"][a]):
            own = store.client_rows(int(cid))
            if len(own) > 2:
                mine = [r for r in a if store.index["client_id"][r] == cid]
                first, second = np.array_split(own, 2)
                assert mine[0] in first and mine[1] in second
        with pytest.raises(InvalidParameterError, match="sent no update"):
            select_updates(store, clients=[99], per_client=1)


def test_a_corpus_that_does_not_rebuild_the_clients_is_refused(runs) -> None:
    other = make_table(n_speakers=10, per_speaker=12, n_features=12, seed=3)
    with pytest.raises(CorpusError, match="trained on"):
        invert_recording(runs["batch1"], method="labels", table=other, write=False)


def test_an_existing_output_is_refused_before_any_work(runs, table, tmp_path: Path) -> None:
    out = tmp_path / "taken.h5"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError):
        invert_recording(runs["batch1"], method="labels", table=table, out=out)
    assert out.read_text() == "keep me"
    assert default_output(runs["batch1"], "labels") == runs["batch1"].with_name("batch1.invert-labels.h5")


def test_the_audit_grid_runs_the_inversion_and_the_report_shows_it(tmp_path: Path) -> None:
    from fedaudit.audit import AuditConfig, Setting, run_audit
    from fedaudit.report import build_report, validate_results

    config = AuditConfig(rounds=2, shadow_runs=1, attacks=("stats", "label-only"), n_updates=(1,), repeats=2,
                         inversion=("labels", "analytic"), inversion_updates=1, settings=(Setting(id="fedsgd"),))
    results = run_audit(config, tmp_path / "audit", jobs=1)
    written = json.loads((tmp_path / "audit" / "results.json").read_text())
    validate_results(written)
    assert written["schema_version"] == "1.1.0"
    inversions = written["cells"][0]["inversions"]
    assert [i["method"] for i in inversions] == ["labels", "analytic"]
    assert inversions[1]["metrics"][0]["name"] == "cosine" and inversions[1]["metrics"][0]["value"] > 0.5
    report = build_report(results)
    assert [i.method for i in report.inversions] == ["labels", "analytic"]
    assert {b.attack for b in report.settings[0].baselines} == {"stats"}
    assert sorted((tmp_path / "audit" / "cache" / "inversions").glob("*.h5"))
    # Resumed: nothing recomputed, the same inversion summaries.
    again = run_audit(config, tmp_path / "audit", jobs=1)
    assert again["cells"][0]["inversions"] == results["cells"][0]["inversions"]


def test_the_grid_refuses_an_inversion_method_it_cannot_run() -> None:
    from fedaudit.audit import AuditConfig, Setting, plan_audit

    with pytest.raises(InvalidParameterError, match="needs the rounds' global weights"):
        plan_audit(AuditConfig(rounds=2, inversion=("optimize",), settings=(Setting(id="fedsgd"),)))
    with pytest.raises(InvalidParameterError, match="Unknown inversion method 'telepathy'"):
        plan_audit(AuditConfig(rounds=2, inversion=("telepathy",), settings=(Setting(id="fedsgd"),)))
    assert "inversion" not in AuditConfig().to_dict()  # the configuration hash of audits without it is unchanged
