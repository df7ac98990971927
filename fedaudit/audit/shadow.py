"""Pipeline step: shadow training, re-running a target's federated setup on corpora the attacker owns.

The attacker knows the architecture and hyper-parameters of the target run
(Feng et al., Interspeech 2022, threat model); they are read from the target
recording's configuration. Each shadow run is recorded in the same format, with
the shadow speakers' genders as ground truth, which the attacker owns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedaudit.config import FLConfig
from fedaudit.data.table import FeatureTable
from fedaudit.exceptions import InvalidParameterError, OutputExistsError, RecordingError
from fedaudit.hooks import Hook
from fedaudit.record.reader import UpdateStore
from fedaudit.types import DefensePieces

if TYPE_CHECKING:
    from fedaudit.defenses import Defense

__all__ = ["run_shadow", "shadow_config", "shadow_folds", "shadow_paths", "target_feature_set", "target_n_frames"]

#: Settings copied from the target: what the attacker is assumed to know. The number of
#: speaker folds is the shadow corpus's own (:func:`shadow_folds`).
_KNOWN = ("algorithm", "rounds", "client_fraction", "batch_size", "lr", "local_epochs", "optimizer", "model",
          "hidden", "dropout", "n_classes", "normalization", "clients_per_speaker", "n_folds", "val_fraction")


def shadow_folds(target_n_folds: int, n_speakers: int, *, n_folds: int | None = None) -> int:
    """Speaker folds of shadow runs: ``n_folds`` if given, else the largest number <= the target's that the shadow
    speakers allow (one speaker per fold at least), and at least 2.

    Parameters
    ----------
    target_n_folds
        The target run's number of folds.
    n_speakers
        Speakers of the shadow corpora.
    n_folds
        An explicit choice (``fedaudit shadow --n-folds``).

    Raises
    ------
    InvalidParameterError
        If the shadow corpora have fewer than 2 speakers, or ``n_folds`` is not in ``[2, n_speakers]``.

    Examples
    --------
    >>> shadow_folds(5, 40), shadow_folds(5, 4), shadow_folds(5, 4, n_folds=2)
    (5, 4, 2)
    """
    if n_speakers < 2:
        raise InvalidParameterError(
            f"The shadow corpora have {n_speakers} speaker(s); speaker-disjoint shadow runs need at least 2 "
            "(one held out, one training). Add shadow speakers."
        )
    if n_folds is not None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int) or not 2 <= n_folds <= n_speakers:
            raise InvalidParameterError(
                f"The shadow corpora have {n_speakers} speakers, so shadow runs take 2 to {n_speakers} speaker "
                f"folds. Got n_folds={n_folds!r}; choose a number in that range."
            )
        return n_folds
    return max(2, min(int(target_n_folds), n_speakers))


def shadow_config(target: UpdateStore | dict[str, Any], *, run: int, seed: int, n_folds: int | None = None) -> FLConfig:
    """The target's FL configuration, with the fold and seed of shadow run ``run`` (and ``n_folds`` folds if given)."""
    config = target.config if isinstance(target, UpdateStore) else target
    missing = [k for k in _KNOWN if k not in config]
    if missing:
        raise RecordingError(f"The target recording's configuration lacks {missing}; cannot mirror its setup.")
    kwargs = {k: config[k] for k in _KNOWN}
    kwargs["hidden"] = tuple(kwargs["hidden"])
    kwargs["dropout"] = tuple(kwargs["dropout"])
    if n_folds is not None:
        kwargs["n_folds"] = int(n_folds)
    kwargs["fold"] = run % int(kwargs["n_folds"])
    kwargs["seed"] = seed + run
    known = {f.name for f in fields(FLConfig)}
    return FLConfig(**{k: v for k, v in kwargs.items() if k in known})


def target_feature_set(target: str | os.PathLike[str]) -> tuple[str, int | None]:
    """The feature set a target recording was trained on, and its planned rounds."""
    with UpdateStore.open(target, warn_incomplete=False) as store:
        feature_set = str(store.config.get("data", {}).get("feature_set", "emobase"))
        rounds = store.config.get("rounds")
    return feature_set, None if rounds is None else int(rounds)


def target_n_frames(target: str | os.PathLike[str]) -> int | None:
    """Frames per utterance of a target recorded on a frame-level feature set (``None`` for utterance-level ones)."""
    with UpdateStore.open(target, warn_incomplete=False) as store:
        shape = store.config.get("data", {}).get("frame_shape")
    return None if shape is None else int(shape[0])


def shadow_paths(target: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, runs: int,
                 name: str | None = None) -> list[Path]:
    """Where :func:`run_shadow` writes run ``k``: ``<out_dir>/<name>_run<k>.h5``."""
    prefix = name or f"shadow_{Path(target).stem}"
    return [Path(out_dir) / f"{prefix}_run{k}.h5" for k in range(runs)]


def run_shadow(
    target: str | os.PathLike[str],
    table: FeatureTable,
    *,
    out_dir: str | os.PathLike[str],
    runs: int = 5,
    seed: int | None = None,
    init_from_target: bool = False,
    name: str | None = None,
    overwrite: bool = False,
    hooks: Callable[[int], Sequence[Hook]] | None = None,
    defenses: Callable[[FLConfig], Sequence[Defense] | DefensePieces] | None = None,
    n_folds: int | None = None,
) -> list[Path]:
    """Record ``runs`` shadow runs mirroring the target's configuration.

    The speaker folds are the shadow corpus's own: ``n_folds`` if given, else
    the largest number up to the target's that the shadow speakers allow (at
    least 2; :func:`shadow_folds`), so that a small shadow corpus (4 speakers
    against a target's 5 folds) still gives shadow runs. Each recording's
    configuration holds the choice (``n_folds``, and ``shadow_folds`` with the
    target's folds and the shadow speakers).
    Run ``k`` holds out speaker fold ``k mod n_folds`` and uses seed ``seed + k``.
    A frame-level shadow table is padded or truncated to the target's frames
    per utterance (``/run/config["data"]["frame_shape"]``).
    By default ``seed`` is the target's seed plus 1000, so that no shadow run
    shares the target's random initialisation by accident.

    Parameters
    ----------
    target
        The target recording (only its configuration is read).
    table
        Features of the shadow corpora (the attacker's own data, genders known).
    out_dir
        Folder for ``<name>_run<k>.h5``.
    runs
        Number of shadow runs.
    seed
        Base seed (default: the target's seed + 1000).
    init_from_target
        Start every shadow run from the target's initial global model, which a
        server adversary knows (it sent it). Hidden units then line up with the
        target's, and the later layers leak far more (``docs/attacks.md``).
    name
        File name prefix (default: ``shadow_<target stem>``).
    overwrite
        Replace existing shadow recordings.
    hooks
        ``hooks(k)`` gives extra hooks for run ``k`` (progress display).
    defenses
        ``defenses(config)`` gives the defenses of a shadow run of ``config``
        (a defense-aware attacker mirrors the target's defenses); none by default.
    n_folds
        Speaker folds of the shadow runs (default: chosen by :func:`shadow_folds`).
    """
    from fedaudit.audit.record import record_run

    if runs < 1:
        raise InvalidParameterError(f"runs must be >= 1. Got {runs!r}.")
    target = Path(target)
    with UpdateStore.open(target, warn_incomplete=False) as store:
        config = dict(store.config)
        target_data = dict(config.get("data", {}))
        init = store.initial_weights() if init_from_target else None
    if seed is None:
        seed = int(config.get("seed", 0)) + 1000
    target_frames = target_data.get("frame_shape")
    if target_frames is not None and table.frame_shape is not None and table.frame_shape[0] != int(target_frames[0]):
        table = table.with_frames(int(target_frames[0]))  # mirror the target's frames per utterance
    if target_data.get("n_features") not in (None, table.n_features) or target_data.get("feature_set") not in (
        None, table.feature_set,
    ):
        raise InvalidParameterError(
            f"The target was trained on {target_data.get('n_features')} {target_data.get('feature_set')} features, "
            f"the shadow corpora give {table.n_features} {table.feature_set} features; extract the same feature set."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = shadow_paths(target, out_dir, runs=runs, name=name)
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} already exists.")
    if "n_folds" not in config:
        raise RecordingError("The target recording's configuration lacks ['n_folds']; cannot mirror its setup.")
    folds = shadow_folds(int(config["n_folds"]), len(table.speakers), n_folds=n_folds)
    choice = {"n_folds": folds, "target_n_folds": int(config["n_folds"]), "shadow_speakers": len(table.speakers),
              "chosen": "given" if n_folds is not None else "largest the shadow speakers allow, up to the target's"}
    for k, path in enumerate(paths):
        cfg = shadow_config(config, run=k, seed=seed, n_folds=folds)
        record_run(cfg, table, path, overwrite=overwrite, hooks=list(hooks(k)) if hooks else [],
                   defenses=defenses(cfg) if defenses else (),
                   data_info={"role": "shadow", "target": str(target)}, initial_weights=init,
                   extra_config={"shadow_of": target.name, "shadow_run": k, "init_from_target": init_from_target,
                                 "shadow_folds": choice})
    return paths
