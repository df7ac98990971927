"""Pipeline step: run a simulated federation and record every client update."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedaudit.config import FLConfig
from fedaudit.data.table import FeatureTable
from fedaudit.hooks import Hook
from fedaudit.record.recorder import Recorder
from fedaudit.record.writer import check_output_path
from fedaudit.types import DefensePieces

if TYPE_CHECKING:
    from fedaudit.defenses import Defense
    from fedaudit.fl.simulate import SimulationResult

__all__ = ["build_run_defenses", "data_description", "record_run"]


def data_description(table: FeatureTable) -> dict[str, Any]:
    """What a recording says about the data it was trained on."""
    return {
        "feature_set": table.feature_set,
        "n_features": table.n_features,
        "n_utterances": len(table),
        "corpora": sorted(set(table.corpus.tolist())),
        "n_speakers": len(table.speakers),
    }


def build_run_defenses(
    config: FLConfig, table: FeatureTable, defenses: Sequence[Defense] | DefensePieces = ()
) -> DefensePieces:
    """The pieces the simulator plugs in for ``defenses`` in a run of ``config`` on ``table``."""
    if isinstance(defenses, DefensePieces):
        return defenses
    if not defenses:
        return DefensePieces(settings={"names": []})
    from fedaudit.defenses import DefenseContext, build_defenses

    return build_defenses(list(defenses), DefenseContext.for_table(config, table))


def record_run(
    config: FLConfig,
    table: FeatureTable,
    out: str | os.PathLike[str],
    *,
    defenses: Sequence[Defense] | DefensePieces = (),
    dtype: str = "float32",
    store_globals: bool = False,
    overwrite: bool = False,
    hooks: Sequence[Hook] = (),
    data_info: Mapping[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    initial_weights: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Simulate ``config`` on ``table`` with ``defenses`` and write every update to ``out``.

    The recording holds the full configuration (the defenses' resolved
    settings under ``"defenses"``), the data description, the library
    versions, the utility of the global model per round, and the privacy each
    DP mechanism spent.

    Parameters
    ----------
    config
        The federated run.
    table
        Features of every utterance (not yet normalised).
    out
        Output ``.h5``; must not exist unless ``overwrite``.
    defenses
        Defense objects from :data:`fedaudit.defenses.DEFENSES` (applied in
        order), or pieces already built.
    dtype, store_globals
        Storage of updates; also store the global weights of every round.
    hooks
        Further observers (progress displays).
    data_info, extra_config
        Added to the recorded data description and configuration.
    initial_weights
        Start from these weights (a target's initial model, for shadow runs).
    """
    from fedaudit.fl.simulate import simulate

    out = check_output_path(Path(out), overwrite=overwrite)
    pieces = build_run_defenses(config, table, defenses)
    info = {**data_description(table), **dict(data_info or {})}
    extra = {"defenses": {"names": [], **dict(pieces.settings)}, **dict(extra_config or {})}
    with Recorder(out, dtype=dtype, store_globals=store_globals, overwrite=overwrite) as recorder:
        return simulate(config, table, defenses=pieces, hooks=[recorder, *hooks], data_info=info,
                        extra_config=extra, initial_weights=initial_weights)
