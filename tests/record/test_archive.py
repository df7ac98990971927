"""Every older format version still reads (as anndata keeps archives of its old formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedaudit.record import UpdateStore
from fedaudit.record.format import ENCODING_VERSION, READABLE_VERSIONS

ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "archive"


def test_every_readable_version_but_the_current_has_an_archive() -> None:
    archived = {p.name.lstrip("v") for p in ARCHIVE.iterdir() if p.is_dir()}
    assert set(READABLE_VERSIONS) - {ENCODING_VERSION} <= archived


@pytest.mark.parametrize("version", sorted(p.name for p in ARCHIVE.iterdir() if p.is_dir()))
def test_archived_recording_reads_with_the_values_it_was_written_with(version: str) -> None:
    expected = np.load(ARCHIVE / version / "expected.npz")
    with UpdateStore.open(ARCHIVE / version / "updates.h5") as store:
        assert store.complete and store.encoding_version == version.lstrip("v")
        assert store.layers == ["fc1", "fc2", "fc3"]
        for name in store.parameter_names:
            np.testing.assert_array_equal(store.param(name), expected[name.replace(".", "_")])
        np.testing.assert_array_equal(store.index["client_id"], expected["client_id"])
        np.testing.assert_array_equal(store.index["server_round"], expected["server_round"])
        assert set(store.ground_truth()["gender"]) == {"F", "M"}
        metrics = store.metrics()
        assert len(metrics["val_uar"]) == store.rounds_completed == 3
        assert store.has_globals and store.global_weights(2)["fc1.weight"].shape == (4, 6)


def test_format_1_0_privacy_in_the_result_is_read_as_typed_privacy() -> None:
    with UpdateStore.open(ARCHIVE / "v1.0.0" / "updates.h5") as store:
        raw = store.result["privacy_udp"]
        (spent,) = store.privacy()
    assert spent.mechanism == "udp" and spent.level == "user" and spent.accountant == "rdp"
    assert spent.noise_multiplier == raw["noise_multiplier"] == 1.0
    assert spent.epsilon_aggregate == raw["epsilon_amplified"]
    assert {str(k): v for k, v in spent.epsilon_per_client.items()} == raw["epsilon_per_client"]
    assert all(np.isfinite(v) and v > 0 for v in spent.epsilon_per_client.values())
