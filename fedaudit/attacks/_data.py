"""Reading shadow recordings into training sets, grouped by client (helpers for writing an attack)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedaudit.attacks.base import ShapeMismatchError, gender_labels
from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "ShadowRows",
    "check_same_architecture",
    "grouped_split",
    "iter_blocks",
    "shadow_rows",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class ShadowRows:
    """Labels and client groups of every committed update row of several shadow stores."""

    store_index: np.ndarray  # which store each row comes from
    row: np.ndarray  # row number inside its store
    y: np.ndarray  # 0 = F, 1 = M (the client's gender; the attacker owns shadow ground truth)
    group: np.ndarray  # one id per (store, client): validation splits never cut a client

    def __len__(self) -> int:
        return len(self.y)


def check_same_architecture(stores: Sequence[Any], params: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``params``, identical in every store, or a clear error naming both shapes."""
    if not stores:
        raise InvalidParameterError("No shadow recording given; record some with `fedaudit shadow`.")
    shapes = {p: tuple(stores[0].shape(p)) for p in params}
    for store in stores[1:]:
        for p in params:
            s = tuple(store.shape(p))
            if s != shapes[p]:
                raise ShapeMismatchError(
                    f"Shadow recordings disagree on {p}: {stores[0].path} has {shapes[p]}, {store.path} has {s}."
                )
    return shapes


def shadow_rows(stores: Sequence[Any]) -> ShadowRows:
    """Every committed update row of the stores with its client's gender and group."""
    parts_s, parts_r, parts_y, parts_g = [], [], [], []
    next_group = 0
    for s_idx, store in enumerate(stores):
        truth = store.ground_truth()
        if "gender" not in truth:
            raise InvalidParameterError(
                f"Shadow recording {store.path} holds no ground truth (the clients' genders); "
                "an attack fits on shadow runs the attacker recorded itself (`fedaudit shadow`)."
            )
        gender = gender_labels(truth["gender"])
        position = {int(c): i for i, c in enumerate(store.client_ids.tolist())}
        cid = store.index["client_id"]
        pos = np.array([position[int(c)] for c in cid], dtype=np.int64)
        parts_s.append(np.full(len(cid), s_idx))
        parts_r.append(np.arange(len(cid)))
        parts_y.append(gender[pos])
        parts_g.append(pos + next_group)
        next_group += len(position)
    return ShadowRows(
        store_index=np.concatenate(parts_s), row=np.concatenate(parts_r), y=np.concatenate(parts_y),
        group=np.concatenate(parts_g),
    )


def grouped_split(
    rows: ShadowRows, *, val_fraction: float, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation row masks split by client (stratified by gender), never by update.

    Splitting individual updates would put updates of the same client on both
    sides and inflate the validation score.
    """
    rng = np.random.default_rng(seed)
    val_groups: list[int] = []
    for label in (0, 1):
        groups = np.unique(rows.group[rows.y == label])
        rng.shuffle(groups)
        n_val = max(1, int(round(len(groups) * val_fraction))) if len(groups) > 1 else 0
        val_groups.extend(groups[:n_val].tolist())
    val = np.isin(rows.group, val_groups)
    return ~val, val


def iter_blocks(
    stores: Sequence[Any], rows: ShadowRows, params: Sequence[str], *, mask: np.ndarray | None = None, batch: int = 256
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(positions, {param: arrays})`` blocks of the selected rows, one store at a time, in row order."""
    selected = np.arange(len(rows)) if mask is None else np.flatnonzero(mask)
    for s_idx, store in enumerate(stores):
        mine = selected[rows.store_index[selected] == s_idx]
        for start in range(0, len(mine), batch):
            pos = mine[start : start + batch]
            yield pos, {p: store.param(p, rows.row[pos]) for p in params}

