"""Pipeline step: run a simulated federation and record every client update."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedaudit.config import FLConfig
from fedaudit.data.table import FeatureTable
from fedaudit.hooks import Hook
from fedaudit.record.recorder import Recorder
from fedaudit.record.writer import check_output_path
from fedaudit.types import CanarySource, DefensePieces

if TYPE_CHECKING:
    from fedaudit.defenses import Defense
    from fedaudit.fl.simulate import SimulationResult

__all__ = ["build_run_defenses", "canary_sidecar_path", "data_description", "record_run"]


def data_description(table: FeatureTable) -> dict[str, Any]:
    """What a recording says about the data it was trained on.

    ``frame_shape`` is ``[T, C]`` for a frame-level feature set (``mfcc-frames``:
    ``T`` frames of ``C`` values per utterance, rows flattened frame-major) and
    ``None`` for utterance-level features, so that shadow runs and attacks
    rebuild the same input.
    """
    return {
        "feature_set": table.feature_set,
        "n_features": table.n_features,
        "frame_shape": None if table.frame_shape is None else [int(d) for d in table.frame_shape],
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


def canary_sidecar_path(out: str | os.PathLike[str]) -> Path:
    """Where a recording's canary audit is kept: ``<run>.canaries.json`` next to ``<run>.h5``."""
    return Path(out).with_suffix(".canaries.json")


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
    canaries: int | CanarySource | None = None,
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
    canaries
        Audit the run's privacy with this many canary clients
        (:func:`fedaudit.privacy.canary_clients`, seeded by the run's seed), or with a
        canary source. The audit summary goes into the run result
        (``"privacy_audit"``); every canary's flag, rounds and score, with the summary,
        into :func:`canary_sidecar_path` (never into the recording's client data).
    """
    from fedaudit.fl.simulate import simulate

    out = check_output_path(Path(out), overwrite=overwrite)
    pieces = build_run_defenses(config, table, defenses)
    info = {**data_description(table), **dict(data_info or {})}
    extra = {"defenses": {"names": [], **dict(pieces.settings)}, **dict(extra_config or {})}
    source: CanarySource | None = None
    if isinstance(canaries, int) and not isinstance(canaries, bool) and canaries > 0:
        from fedaudit.privacy import canary_clients

        source = canary_clients(pieces.settings, n_canaries=canaries, rounds=config.rounds, seed=config.seed)
    elif canaries is not None and not isinstance(canaries, int):
        source = canaries
    with Recorder(out, dtype=dtype, store_globals=store_globals, overwrite=overwrite) as recorder:
        result = simulate(config, table, defenses=pieces, hooks=[recorder, *hooks], data_info=info,
                          extra_config=extra, initial_weights=initial_weights, canaries=source)
    if source is not None:
        sidecar = {"recording": out.name, "audit": result.defense_report.get("privacy_audit")}
        table_fn = getattr(source, "canary_table", None)
        if callable(table_fn):
            sidecar["canaries"] = table_fn()
        canary_sidecar_path(out).write_text(json.dumps(sidecar, indent=1))
    return result
