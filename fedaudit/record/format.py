"""Constants of the HDF5 update format (specified in docs/format.md)."""

from __future__ import annotations

ENCODING_TYPE = "fedaudit.updates"
ENCODING_VERSION = "1.0.0"
FORMAT_MAJOR = 1

#: Update kinds, stored as small integers in /updates/index/kind.
KINDS: tuple[str, ...] = ("gradient", "pseudo_gradient")

#: Storage dtypes accepted for update arrays.
DTYPES: dict[str, str] = {"float32": "<f4", "float16": "<f2"}

#: Index columns of /updates/index and their dtypes.
INDEX_COLUMNS: dict[str, str] = {
    "server_round": "<i8",
    "client_id": "<i8",
    "kind": "u1",
    "num_samples": "<i8",
    "local_steps": "<i8",
    "lr": "<f8",
    "bytes_sent": "<i8",
    "encrypt_seconds": "<f8",
    "decrypt_seconds": "<f8",
}

#: Per-round utility columns of /metrics.
METRIC_COLUMNS: tuple[str, ...] = ("server_round", "val_uar", "val_acc", "test_uar", "test_acc", "train_loss", "n_clients")

#: Attribute marking the ground-truth group: attacks may read it only to score.
EVALUATION_ONLY_ATTR = "evaluation_only"

STATUS_RUNNING = 0
STATUS_COMPLETE = 1
