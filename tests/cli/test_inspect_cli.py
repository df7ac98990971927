"""`fedaudit inspect` shows a recording's defenses, their settings and the privacy they claim."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedaudit.cli.main import app

ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "archive" / "v1.0.0" / "updates.h5"
runner = CliRunner()


def test_inspect_shows_defenses_and_epsilon_spent() -> None:
    res = runner.invoke(app, ["inspect", str(ARCHIVE)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "defenses" in res.output and "udp" in res.output and "noise_multiplier=1" in res.output
    assert "epsilon spent (udp)" in res.output and "aggregate view 6.48" in res.output


def test_inspect_json_holds_typed_privacy() -> None:
    res = runner.invoke(app, ["inspect", str(ARCHIVE), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["defenses"]["names"] == ["udp"]
    (spent,) = summary["privacy"]
    from fedaudit.record import UpdateStore

    with UpdateStore.open(ARCHIVE) as store:
        joined = {str(c) for c in store.index["client_id"].tolist()}
    assert spent["mechanism"] == "udp" and spent["level"] == "user"
    assert set(spent["epsilon_per_client"]) == joined  # every client that sent an update, no other


def test_inspect_reads_a_recording_from_before_per_class_scores() -> None:
    from fedaudit.record import UpdateStore

    with UpdateStore.open(ARCHIVE) as store:
        assert "test_f1" not in store.metrics() and "test_f1" not in store.result
    res = runner.invoke(app, ["inspect", str(ARCHIVE)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "test UAR" in res.output and "macro P / R / F1" not in res.output and "per emotion" not in res.output
