"""Speaker-disjoint folds and the split of speakers into federated clients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedaudit.data.table import EMOTIONS, FeatureTable
from fedaudit.exceptions import CorpusError, InvalidParameterError

__all__ = ["ClientData", "FederatedSplit", "speaker_folds", "split_clients"]


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientData:
    """The private data of one client: row indices into the run's feature table."""

    client_id: int
    speaker_id: str
    gender: str
    corpus: str
    train_rows: np.ndarray
    val_rows: np.ndarray


@dataclass(frozen=True, kw_only=True, eq=False)
class FederatedSplit:
    """Clients (training speakers) and held-out test rows of one fold."""

    clients: list[ClientData]
    test_rows: np.ndarray
    test_speakers: list[str]

    @property
    def train_mask_rows(self) -> np.ndarray:
        return np.concatenate([np.concatenate([c.train_rows, c.val_rows]) for c in self.clients])


def speaker_folds(table: FeatureTable, *, n_folds: int, seed: int) -> list[list[str]]:
    """Assign speakers to ``n_folds`` folds, balancing gender across folds.

    Speakers of each gender are shuffled with ``seed`` and dealt round-robin,
    so every fold holds both genders whenever the corpus allows it.
    """
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    spk_gender = dict(zip(table.speaker_id.tolist(), table.gender.tolist(), strict=True))
    offset = 0
    for gender in sorted(set(spk_gender.values())):
        speakers = sorted(s for s, g in spk_gender.items() if g == gender)
        rng.shuffle(speakers)
        for i, spk in enumerate(speakers):
            folds[(i + offset) % n_folds].append(spk)
        offset += len(speakers)
    if any(not f for f in folds):
        raise CorpusError(
            f"The corpus has {len(spk_gender)} speakers, too few for {n_folds} speaker-disjoint folds; "
            "use fewer folds."
        )
    return folds


def split_clients(
    table: FeatureTable,
    *,
    n_folds: int = 5,
    fold: int = 0,
    clients_per_speaker: int = 1,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedSplit:
    """Hold out one speaker fold as test and turn the other speakers into clients.

    Each training speaker becomes ``clients_per_speaker`` clients holding
    disjoint shares of its utterances; within a client, ``val_fraction`` of the
    utterances are kept for validation.
    """
    if clients_per_speaker < 1:
        raise InvalidParameterError(f"clients_per_speaker must be >= 1. Got {clients_per_speaker!r}.")
    unknown = sorted(set(table.emotion.tolist()) - set(EMOTIONS))
    if unknown:
        raise CorpusError(
            f"The feature table holds emotions {unknown} outside {list(EMOTIONS)}; "
            "load the corpus without keep_all_emotions for federated training."
        )
    folds = speaker_folds(table, n_folds=n_folds, seed=seed)
    test_speakers = sorted(folds[fold])
    test_set = set(test_speakers)
    rng = np.random.default_rng([seed, 1])
    clients: list[ClientData] = []
    speakers = sorted(s for s in set(table.speaker_id.tolist()) if s not in test_set)
    for spk in speakers:
        rows = np.flatnonzero(table.speaker_id == spk)
        rows = rows[rng.permutation(len(rows))]
        shares = np.array_split(rows, clients_per_speaker)
        if any(len(s) < 2 for s in shares):
            raise CorpusError(
                f"Speaker {spk!r} has {len(rows)} utterances, too few for {clients_per_speaker} clients "
                "of at least 2 utterances; lower clients_per_speaker."
            )
        for share in shares:
            n_val = int(round(len(share) * val_fraction))
            n_val = min(n_val, len(share) - 1)
            clients.append(
                ClientData(
                    client_id=len(clients),
                    speaker_id=spk,
                    gender=str(table.gender[rows[0]]),
                    corpus=str(table.corpus[rows[0]]),
                    train_rows=np.sort(share[n_val:]),
                    val_rows=np.sort(share[:n_val]),
                )
            )
    test_rows = np.flatnonzero(np.isin(table.speaker_id, test_speakers))
    return FederatedSplit(clients=clients, test_rows=test_rows, test_speakers=test_speakers)
