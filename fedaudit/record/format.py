"""Constants of the HDF5 update format (specified in docs/format.md)."""

from __future__ import annotations

ENCODING_TYPE = "fedaudit.updates"
ENCODING_VERSION = "1.1.0"
FORMAT_MAJOR = 1

#: Every version this reader reads (older minors are converted on read).
READABLE_VERSIONS: tuple[str, ...] = ("1.0.0", "1.1.0")

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

#: Per-round utility columns of /metrics in format 1.0.0 (1.1.0 stores the names the run declares).
METRIC_COLUMNS_V1_0: tuple[str, ...] = (
    "server_round", "val_uar", "val_acc", "test_uar", "test_acc", "train_loss", "n_clients",
)

#: Groups and datasets.
RUN = "run"
CLIENTS = "clients"
GROUND_TRUTH = "ground_truth"
UPDATES = "updates"
INDEX = "updates/index"
GLOBALS = "globals"
INITIAL_WEIGHTS = "initial_weights"
METRICS = "metrics"
PRIVACY = "privacy"

#: Client table columns (public facts only).
CLIENT_COLUMNS: tuple[str, ...] = ("client_id", "corpus", "n_train", "n_val")

#: Datasets and attributes of one /privacy/<mechanism> group (format 1.1.0).
PRIVACY_EPSILON = "epsilon"  # float64[n_clients], NaN for a client that never joined
PRIVACY_ROUNDS_JOINED = "rounds_joined"  # int64[n_clients]
PRIVACY_ATTRS: tuple[str, ...] = ("level", "delta", "accountant", "noise_multiplier", "epsilon_aggregate")

#: Attribute marking the ground-truth group: attacks may read it only to score.
EVALUATION_ONLY_ATTR = "evaluation_only"

STATUS_RUNNING = 0
STATUS_COMPLETE = 1

#: Integrity (format 1.1.0): every checksum is the 64-bit xxh3 of the bytes named in docs/format.md.
CHECKSUM_ALGORITHM = "xxh3_64"
#: Attribute holding the checksum of a dataset written once (JSON, tables, initial weights).
CHECKSUM_ATTR = "checksum"
#: uint64[n_updates, n_parameters]: checksum of each update chunk, parameters in architecture order.
INDEX_CHECKSUM = "updates/index/checksum"
#: Per-round table: one past the last update row of each round, and the checksum of the round's
#: index rows, row end, metrics row and global-weight checksums.
ROUNDS = "rounds"
ROUND_END = "rounds/end"
ROUND_CHECKSUM = "rounds/checksum"
#: uint64[n_rounds, n_parameters]: checksum of each stored global-weight chunk.
ROUND_GLOBALS_CHECKSUM = "rounds/globals_checksum"
#: The first version that carries checksums.
CHECKSUM_SINCE = (1, 1, 0)
