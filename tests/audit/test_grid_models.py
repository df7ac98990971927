"""The audit grid beyond the MLP: a ``model`` key mirrored by every run, a disk estimate that counts the
recorded model's own parameters, and shadow runs that choose their folds from the shadow speakers."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest

from fedaudit.audit.grid import AuditConfig, Setting, estimate_bytes, load_audit_config, plan_audit, run_audit
from fedaudit.data.sources import count_speakers
from fedaudit.exceptions import CorpusError, InvalidParameterError
from fedaudit.record import UpdateStore
from tests.data._fixtures import make_emodb, write_wav


def _shadow_specs(config: AuditConfig) -> list[dict]:
    return [t.spec for t in plan_audit(config).recordings if t.spec["role"] == "shadow"]


@pytest.fixture
def emodb(tmp_path: Path) -> Path:
    """Emo-DB in its published layout with 3 speakers of the four emotions (03, 08, 16)."""
    return make_emodb(tmp_path / "emodb")


def _quiet_count(corpora: list[str], roots: list[Path]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's undocumented speaker and stray files are skipped with warnings
        return count_speakers(corpora, roots=roots)


def test_count_speakers_reads_listings(emodb: Path) -> None:
    assert count_speakers(["demo-shadow"]) == 40
    assert count_speakers(["demo-shadow", "demo-private"]) == 80
    assert _quiet_count(["emodb", "demo-shadow"], [emodb]) == 43
    with pytest.raises(CorpusError, match="one --data-root per non-demo corpus"):
        count_speakers(["emodb"])
    with pytest.raises(CorpusError, match="Unknown corpus 'nosuch'"):
        count_speakers(["nosuch"], roots=[emodb])


def test_shadow_runs_take_the_folds_their_speakers_allow(emodb: Path) -> None:
    demo = _shadow_specs(AuditConfig(rounds=2, shadow_runs=2, attacks=("stats",), settings=(Setting(id="a"),)))
    assert [s["config"]["n_folds"] for s in demo] == [5, 5]  # 40 shadow speakers: the target's 5 folds
    assert [s["config"]["fold"] for s in demo] == [0, 1]

    small = AuditConfig(rounds=2, shadow_runs=4, attacks=("stats",), shadow_corpora=("emodb",),
                        data_roots={"emodb": str(emodb)}, settings=(Setting(id="a"),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs = _shadow_specs(small)
        target = next(t for t in plan_audit(small).recordings if t.spec["role"] == "target")
    assert [s["config"]["n_folds"] for s in specs] == [3, 3, 3, 3]  # 3 speakers < the target's 5 folds
    assert [s["config"]["fold"] for s in specs] == [0, 1, 2, 0]
    assert target.spec["config"]["n_folds"] == 5  # the target keeps its own split


def test_shadow_folds_key_overrides_and_bad_choices_are_one_sentence(emodb: Path) -> None:
    specs = _shadow_specs(AuditConfig(rounds=2, shadow_runs=1, attacks=("stats",), shadow_folds=8,
                                      settings=(Setting(id="a"),)))
    assert specs[0]["config"]["n_folds"] == 8
    too_many = AuditConfig(rounds=2, shadow_runs=1, attacks=("stats",), shadow_corpora=("emodb",),
                           data_roots={"emodb": str(emodb)}, shadow_folds=4, settings=(Setting(id="a"),))
    with warnings.catch_warnings(), pytest.raises(
            InvalidParameterError, match=r"The audit's shadow corpora \['emodb'\]: The shadow corpora have 3 speakers"):
        warnings.simplefilter("ignore")
        plan_audit(too_many)
    with pytest.raises(InvalidParameterError, match="'shadow_folds' must be an integer >= 2"):
        AuditConfig(shadow_folds=1)
    # an attack on public data alone plans no shadow run, so it needs no shadow speakers
    assert _shadow_specs(AuditConfig(attacks=("inversion",), shadow_corpora=("emodb",),
                                     data_roots={"emodb": "/nonexistent"}, settings=(Setting(id="a"),))) == []


def test_defaults_keep_the_configuration_hash_of_older_audits() -> None:
    data = AuditConfig().to_dict()
    assert not {"model", "hidden", "shadow_folds"} & set(data)
    assert {"model", "hidden"} <= set(AuditConfig(model="cnn", hidden=(16, 16, 16)).to_dict())


def test_model_key_is_checked_against_the_feature_set_at_plan_time(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="takes frame sequences, but the 'emobase' features are one vector"):
        plan_audit(AuditConfig(model="cnn", settings=(Setting(id="a"),)))
    with pytest.raises(InvalidParameterError, match="Unknown model 'transformer'"):
        plan_audit(AuditConfig(model="transformer", feature_set="mfcc-frames", settings=(Setting(id="a"),)))
    with pytest.raises(InvalidParameterError, match="Unknown feature set 'mfc'"):
        plan_audit(AuditConfig(feature_set="mfc", settings=(Setting(id="a"),)))
    grid = tmp_path / "grid.toml"
    grid.write_text('model = "lstm"\nfeature_set = "mfcc-frames"\nhidden = [16, 8]\n[[settings]]\nid = "a"\n'
                    'dropout = 0.5\n')
    config = load_audit_config(grid)
    assert config.hidden == (16, 8)
    specs = [t.spec["config"] for t in plan_audit(config).recordings]
    assert {(c["model"], tuple(c["hidden"]), tuple(c["dropout"])) for c in specs} == {("lstm", (16, 8), (0.5, 0.0))}


def test_a_cnn_grid_records_attacks_and_estimates_its_disk(tmp_path: Path) -> None:
    from fedaudit.report import build_report, validate_results

    config = AuditConfig(model="cnn", feature_set="mfcc-frames", hidden=(4, 4, 4), rounds=2, shadow_runs=1,
                         attacks=("stats", "label-only"), n_updates=(1,), repeats=2, dtype="float32",
                         settings=(Setting(id="fedavg", algorithm="fedavg"),))
    plan = plan_audit(config)
    estimate = estimate_bytes(plan)
    results = run_audit(config, tmp_path / "audit", jobs=2)
    validate_results(json.loads((tmp_path / "audit" / "results.json").read_text()))

    written = 0
    for task in plan.recordings:
        with UpdateStore.open(tmp_path / "audit" / "cache" / "recordings" / f"{task.key}.h5") as store:
            assert store.config["model"] == "cnn" and tuple(store.config["hidden"]) == (4, 4, 4)
            per_update = sum(math.prod(store.shape(name)) for name in store.parameter_names)
            written += len(store.index["client_id"]) * per_update * 4
    assert estimate == {"recordings": 2, "bytes": written}
    assert results["setup"]["model"] == "cnn" and results["setup"]["hidden"] == [4, 4, 4]
    assert results["setup"]["shadow_folds"] == [5]
    attacks = {a["attack"] for a in results["cells"][0]["attacks"]}
    assert attacks == {"stats", "label-only"}
    assert any(layer.startswith("conv") for a in results["cells"][0]["attacks"] for layer in a["layers"])

    report = build_report(results)
    assert report.setup.model == "cnn" and report.setup.shadow_folds == (5,)
    from fedaudit.report import write_report

    written = {p.suffix: p for p in write_report(report.to_dict(), tmp_path / "report")}
    for suffix in (".md", ".html"):
        text = written[suffix].read_text()
        assert "cnn (hidden 4-4-4)" in text and "per attacker, 5 speaker folds" in text


def _four_speaker_manifest(root: Path) -> Path:
    """A manifest corpus of 4 speakers (2 F, 2 M), 8 utterances each in the four emotions."""
    rows = ["path,speaker_id,gender,emotion"]
    for speaker, gender in (("s1", "F"), ("s2", "F"), ("s3", "M"), ("s4", "M")):
        for i in range(8):
            write_wav(root / speaker / f"{i}.wav")
            rows.append(f"{speaker}/{i}.wav,{speaker},{gender},{('neu', 'hap', 'sad', 'ang')[i % 4]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_dry_run_names_the_model_and_the_shadow_folds(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedaudit.cli.main import app

    corpus = _four_speaker_manifest(tmp_path / "small")
    grid = tmp_path / "grid.toml"
    grid.write_text(f'rounds = 2\nattacks = ["stats"]\nshadow_corpora = ["manifest"]\n'
                    f'data_roots = {{ manifest = "{corpus}" }}\n[[settings]]\nid = "a"\n')
    res = CliRunner().invoke(app, ["audit", "--config", str(grid), "--out", str(tmp_path / "out"), "--dry-run"],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "model mlp (hidden 256-128) on emobase features; shadow runs on 4 speaker folds (the target's, capped " \
           "by the shadow speakers)" in said
    assert re.search(r"up to \d+\.\d MB of float16 recordings", said)  # small audits in MB, not "0.0 GB"
    assert not (tmp_path / "out" / "cache").exists()


def test_clients_per_speaker_reaches_every_run_and_the_results_warn_of_it(tmp_path: Path) -> None:
    config = AuditConfig(rounds=1, shadow_runs=1, attacks=("stats",), n_updates=(1,), repeats=2, clients_per_speaker=2,
                         n_folds=4, settings=(Setting(id="fedsgd"),))
    specs = [t.spec["config"] for t in plan_audit(config).recordings]
    assert [(c["clients_per_speaker"], c["n_folds"]) for c in specs] == [(2, 4), (2, 4)]
    results = run_audit(config, tmp_path / "audit", jobs=2)
    cell = results["cells"][0]
    assert cell["n_clients"] == 60  # 30 of the 40 speakers train (4 folds), 2 clients each
    assert ("60 clients from 30 training speakers (2 per speaker): clients of one speaker share its voice and "
            "gender, so the interval, which counts clients, is too narrow") in " ".join(cell["warnings"])
    assert {"clients_per_speaker", "n_folds"} <= set(config.to_dict())
    with pytest.raises(InvalidParameterError, match="'n_folds' must be an integer >= 2"):
        AuditConfig(n_folds=1)


def test_the_example_lstm_grid_plans_frame_level_runs() -> None:
    config = load_audit_config(Path(__file__).resolve().parents[2] / "examples" / "audit-lstm.toml")
    plan = plan_audit(config)
    assert {(t.spec["feature_set"], t.spec["config"]["model"]) for t in plan.recordings} == {("mfcc-frames", "lstm")}
    assert {t.spec["attack"] for t in plan.attacks} == {"stats", "inversion", "label-only"}
