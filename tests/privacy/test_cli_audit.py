"""`fedaudit record --canaries`: the epsilon table, the run result, the sidecar, and `fedaudit inspect`."""

from __future__ import annotations

import json
from pathlib import Path

from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from fedaudit.audit.record import canary_sidecar_path
from fedaudit.cli.main import app
from fedaudit.record import UpdateStore

runner = CliRunner()


def test_record_with_canaries_prints_the_epsilon_table_and_stores_the_audit(tmp_path: Path) -> None:
    out = tmp_path / "udp.h5"
    with threadpool_limits(limits=1):
        res = runner.invoke(app, ["record", "--rounds", "4", "--seed", "2", "--out", str(out), "--defense", "udp",
                                  "--clip", "0.5", "--noise-multiplier", "1.0", "--canaries", "40"],
                            catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Privacy audit: 40 canary clients" in res.output
    assert "LB 95%" in res.output and "below" in res.output
    with UpdateStore.open(out) as store:
        audit = store.result["privacy_audit"]
        assert store.n_updates == 4 * 3  # 10% of 32 training clients per round; no canary rows
        assert set(store.client_ids) <= set(range(40))
    assert audit["n_canaries"] == 40 and audit["clip"] == 0.5 and audit["claimed"][0]["mechanism"] == "udp"
    sidecar = json.loads(canary_sidecar_path(out).read_text())
    assert sidecar["recording"] == "udp.h5" and len(sidecar["canaries"]["score"]) == 40
    assert sidecar["audit"] == audit
    res = runner.invoke(app, ["inspect", str(out)], catch_exceptions=False)
    assert res.exit_code == 0 and "epsilon audited (canaries)" in res.output


def test_record_without_canaries_writes_no_audit(tmp_path: Path) -> None:
    out = tmp_path / "plain.h5"
    res = runner.invoke(app, ["record", "--rounds", "1", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Privacy audit" not in res.output
    assert not canary_sidecar_path(out).exists()
    with UpdateStore.open(out) as store:
        assert "privacy_audit" not in store.result
