"""Pipeline step: fit (or load) an attack and score it on a target recording.

What ``fedaudit attack`` and ``fedaudit leakage`` do, as library functions:
expand shadow paths into recordings, read the target's configuration, load
public acoustic features, build the :class:`~fedaudit.attacks.AttackerKnowledge`
an attack fits on, fit, save, score and measure layer-wise leakage. Nothing
here branches on an attack's name: it reads the attack's class attributes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedaudit.attacks.base import (
    ATTACKS,
    FUSED,
    Attack,
    AttackerKnowledge,
    load_attack,
    resolve_layers,
    shadow_hash,
)
from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics.asr import (
    AttackResult,
    ClientPrediction,
    attack_success,
    averaged_draws,
    best_threshold,
    predict_clients,
    row_probabilities,
)
from fedaudit.record.reader import UpdateStore

if TYPE_CHECKING:
    from fedaudit.data.table import FeatureTable
    from fedaudit.metrics.permutation import Jackknife, Significance

__all__ = [
    "AttackReport",
    "DEFAULT_PUBLIC_CORPORA",
    "attack_target",
    "fit_attack",
    "layer_leakage",
    "layer_significance",
    "leakage_of_target",
    "load_public_features",
    "save_attack_model",
    "score_attack",
    "setup_warnings",
    "shadow_files",
    "shadow_speaker_warnings",
    "target_config",
]

PathLike = str | os.PathLike[str]

#: Public corpora an attack that needs public features reads when none is named.
DEFAULT_PUBLIC_CORPORA: tuple[str, ...] = ("demo-shadow",)


@dataclass(frozen=True, kw_only=True)
class AttackReport:
    """Everything one attack run measured on one target."""

    attack: str
    target: str
    layers: list[str]
    fit_seconds: float
    score_seconds: float
    updates_scored: int
    results: dict[str, AttackResult] = field(default_factory=dict)  # key: n_updates ("1", "5", "all")
    predictions: list[ClientPrediction] = field(default_factory=list)  # when the target has no ground truth
    card: dict[str, Any] = field(default_factory=dict)
    saved_model: str | None = None  # the .json card, when the fitted attack was saved
    warnings: list[str] = field(default_factory=list)  # what weakens or qualifies the figures (setup_warnings)
    #: Permutation test of the single-update ASR (key "1"), when asked for.
    significance: dict[str, Significance] = field(default_factory=dict)
    #: Jackknife over shadow runs of the single-update ASR (key "1"), when asked for.
    jackknife: dict[str, Jackknife] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- inputs ------------------------------------------------------------------------
def shadow_files(paths: Sequence[PathLike]) -> list[Path]:
    """Shadow recordings from files and folders (a folder gives every ``*.h5`` in it, sorted).

    Raises
    ------
    InvalidParameterError
        If a path does not exist or a folder holds no recording.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise InvalidParameterError(f"The shadow folder {p} holds no .h5 recordings; run `fedaudit shadow` first.")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InvalidParameterError(f"Shadow recording {p} does not exist; check the path or run `fedaudit shadow`.")
    return files


def target_config(target: PathLike | UpdateStore) -> dict[str, Any]:
    """The target run's configuration as recorded (``/run/config``): normalisation, feature set, ..."""
    if isinstance(target, UpdateStore):
        return dict(target.config)
    with UpdateStore.open(target, warn_incomplete=False) as store:
        return dict(store.config)


def load_public_features(
    corpora: Sequence[str] = DEFAULT_PUBLIC_CORPORA,
    *,
    target: PathLike | UpdateStore | Mapping[str, Any] | None = None,
    roots: Sequence[PathLike] = (),
    cache_dir: PathLike | None = None,
    n_jobs: int = 2,
) -> FeatureTable:
    """Public acoustic features in the target's feature set (``emobase`` when the target does not name one).

    For a frame-level target (``mfcc-frames``) the public frames are padded or cut to the target's frame count.

    Parameters
    ----------
    corpora
        Public corpora (demo corpora need no root).
    target
        The target recording, or its configuration, whose feature set to extract.
    roots
        One root per non-demo corpus, in order.
    cache_dir
        Feature cache.
    n_jobs
        Processes for feature extraction.
    """
    from fedaudit.data.sources import load_features

    config = target if isinstance(target, Mapping) else target_config(target) if target is not None else {}
    feature_set = str(config.get("data", {}).get("feature_set", "emobase"))
    frame_shape = config.get("data", {}).get("frame_shape")
    extra = {} if frame_shape is None else {"n_frames": int(frame_shape[0])}  # frames as many as the target's
    return load_features(list(corpora), roots=roots, feature_set=feature_set, cache_dir=cache_dir, n_jobs=n_jobs,
                         **extra)


@contextlib.contextmanager
def _opened(stores: Sequence[PathLike | UpdateStore]) -> Iterator[list[UpdateStore]]:
    """Stores from paths or stores; closes only the ones it opened."""
    opened: list[UpdateStore] = []
    out: list[UpdateStore] = []
    try:
        for s in stores:
            if isinstance(s, UpdateStore):
                out.append(s)
            else:
                store = UpdateStore.open(s, warn_incomplete=False)
                opened.append(store)
                out.append(store)
        yield out
    finally:
        for store in opened:
            store.close()


def _attack_class(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise InvalidParameterError(f"Unknown attack {name!r}; choose one of {sorted(ATTACKS)}.")
    return ATTACKS[name]


# -- fitting -------------------------------------------------------------------------
def fit_attack(
    name: str,
    *,
    shadows: Sequence[PathLike | UpdateStore] = (),
    public: FeatureTable | None = None,
    target: PathLike | UpdateStore | None = None,
    layers: Sequence[str] | Sequence[int] | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> tuple[Attack, dict[str, Any]]:
    """Fit a registered attack on what the attacker knows; returns the attack and its card.

    Parameters
    ----------
    name
        Registry key (``"stats"``, ``"inversion"``, ``"cnn"``).
    shadows
        Shadow recordings (paths or opened stores).
    public
        Public acoustic features.
    target
        The target recording (path or store), read for its configuration only.
    layers
        Layers to attack (names or 1-based numbers, resolved on the shadow
        recordings, else on the target); given to attacks that take ``layers``.
    seed
        Given to attacks that take a ``seed``.
    options
        Further hyper-parameters of the attack.

    Returns
    -------
    tuple
        The fitted attack and its card (``card["fit_seconds"]`` is the fit time).

    Raises
    ------
    InvalidParameterError
        On an unknown attack or option, or input the attack needs but lacks.
    """
    cls = _attack_class(name)
    params = set(cls.param_names())
    options = dict(options or {})
    unknown = sorted(set(options) - params)
    if unknown:
        raise InvalidParameterError(
            f"The {name} attack takes no option {unknown}; its options are {sorted(params)}."
        )
    if "seed" in params:
        options["seed"] = seed
    t0 = time.perf_counter()
    with _opened(shadows) as stores, _opened([target] if target is not None else []) as targets:
        config = dict(targets[0].config) if targets else None
        if layers is not None and "layers" in params:
            available = stores[0].layers if stores else targets[0].layers if targets else None
            options["layers"] = resolve_layers(layers, available) if available is not None else list(layers)
        shapes = {p: targets[0].shape(p) for p in targets[0].parameter_names} if targets else None
        data = AttackerKnowledge(shadows=stores, public=public, target_config=config, target_shapes=shapes)
        attack = cls(**options).fit(data)
        card: dict[str, Any] = {}
        if stores:
            paths = [s.path for s in stores]
            card["shadow_recordings"] = [str(p) for p in paths]
            card["shadow_sha256"] = shadow_hash(paths)
        if public is not None:
            card["public_corpora"] = sorted(set(public.corpus.tolist()))
        if config is not None:
            card["normalization"] = data.target_normalization
    card["fit_seconds"] = time.perf_counter() - t0
    card["fit_info"] = attack.fit_info_
    card["seed"] = seed
    return attack, card


def save_attack_model(
    attack: Attack, name: str, *, models_dir: PathLike, card: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a fitted attack as ``<models_dir>/<name>.pt`` and ``.json`` (the folder is created); returns the card.

    Raises
    ------
    OutputExistsError
        If the model exists and ``overwrite`` is false.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    return attack.save(models_dir / name, card=card, overwrite=overwrite)


# -- scoring -------------------------------------------------------------------------
def score_attack(
    attack: Attack | PathLike,
    target: PathLike | UpdateStore,
    *,
    layers: Sequence[str] | Sequence[int] | None = None,
    n_updates: Sequence[int | str] = (1,),
    repeats: int = 10,
    seed: int = 0,
    card: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AttackReport:
    """Score a fitted attack (or a saved attack model) on a target recording.

    With ground truth in the target, reports the ASR for each ``n_updates``;
    without it (a real audit), per-client predictions only. ``layers`` (names
    or 1-based numbers of the target's layers) restricts the attack
    (:meth:`~fedaudit.attacks.Attack.restricted`).
    """
    if not isinstance(attack, Attack):
        attack = load_attack(attack)
        card = {**attack.card_, **(card or {})}
    card = dict(card or {})
    with _opened([target]) as (store,):
        if layers is not None:
            attack = attack.restricted(resolve_layers(layers, store.layers))
        attack.check_store(store)
        params = attack.required_parameters()
        t0 = time.perf_counter()
        proba = row_probabilities(attack.predict_proba, store, params)
        per_row = time.perf_counter() - t0
        results: dict[str, AttackResult] = {}
        predictions: list[ClientPrediction] = []
        gt = store.ground_truth()
        if "gender" in gt and len(gt["gender"]):
            shadows = [Path(p) for p in card.get("shadow_recordings", []) if Path(p).is_file()]
            for k, n in enumerate(n_updates):
                threshold = 0.5 if n == 1 else averaged_threshold(attack, shadows, n, repeats=repeats, seed=seed)
                results[str(n)] = attack_success(
                    attack.predict_proba, store, params, repeats=repeats, n_updates=n, seed=seed,
                    row_proba=proba if n == 1 else None, threshold=threshold,
                )
                if progress:
                    progress(k + 1, len(n_updates))
        else:
            predictions = predict_clients(attack.predict_proba, store, params, row_proba=proba)
        return AttackReport(
            attack=attack.name, target=str(target.path if isinstance(target, UpdateStore) else target),
            layers=list(attack.layers_),
            fit_seconds=float(card.get("fit_seconds", float("nan"))), score_seconds=per_row,
            updates_scored=store.n_updates, results=results, predictions=predictions, card=card,
        )


def averaged_threshold(
    attack: Attack, shadows: Sequence[PathLike], n_updates: int | str, *, repeats: int = 10, seed: int = 0
) -> float:
    """Decision threshold on P("M") for ``n_updates`` averaged updates, set on the attacker's shadow runs.

    The attack's classifier was fitted on single updates; averaging several
    updates of a client shifts its scores (a ranking can stay perfect while
    every score crosses 0.5), so the threshold is chosen, by unweighted
    average recall, on the same kind of averages drawn from the shadow runs,
    whose genders the attacker owns. Without shadow runs (an attack fitted on
    public data), 0.5.
    """
    if not shadows:
        return 0.5
    scores, labels = [], []
    params = attack.required_parameters()
    for k, path in enumerate(shadows):
        with UpdateStore.open(path, warn_incomplete=False) as shadow:
            s, y = averaged_draws(attack.predict_proba, shadow, params, n_updates=n_updates, repeats=repeats,
                                  seed=seed + 7919 * (k + 1))
        scores.append(s)
        labels.append(y)
    return best_threshold(np.concatenate(scores), np.concatenate(labels))


def layer_leakage(
    attack: Attack, target: PathLike | UpdateStore, *, repeats: int = 10, seed: int = 0
) -> dict[str, AttackResult]:
    """ASR of each layer alone and of the fused attack (key ``"fused"``), from one fitted attack.

    An attack that is not ``per_layer`` gives one row, under its layer's name
    (or ``"fused"`` when it reads several layers together).
    """
    out: dict[str, AttackResult] = {}
    with _opened([target]) as (store,):
        if attack.per_layer:
            for layer in attack.layers_:
                out[layer] = attack.restricted([layer]).score(store, repeats=repeats, seed=seed)
        if not attack.per_layer or len(attack.layers_) > 1:
            key = FUSED if len(attack.layers_) > 1 else attack.layers_[0]
            out[key] = attack.score(store, repeats=repeats, seed=seed)
    return out


# -- the two commands ------------------------------------------------------------------
def _fit_for_target(
    name: str, target: PathLike, *, shadows: Sequence[PathLike], public_corpora: Sequence[str],
    data_roots: Sequence[PathLike], cache_dir: PathLike | None, layers: Sequence[int] | Sequence[str] | None,
    seed: int, options: Mapping[str, Any] | None, progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> tuple[Attack, dict[str, Any]]:
    """Gather what the named attack needs for this target (shadow files, public features), then fit it.

    ``progress`` reaches an attack that takes a ``progress`` callback (per-epoch reports); others ignore it.
    """
    cls = _attack_class(name)
    if progress is not None and "progress" in cls.param_names():
        options = {**(options or {}), "progress": progress}
    files = shadow_files(shadows)
    public = None
    if cls.needs_public:
        public = load_public_features(public_corpora or DEFAULT_PUBLIC_CORPORA, target=target, roots=data_roots,
                                      cache_dir=cache_dir)
    return fit_attack(name, shadows=files, public=public, target=target, layers=layers, seed=seed, options=options)


def _check_target(target: PathLike) -> Path:
    target = Path(target)
    if not target.is_file():
        raise InvalidParameterError(f"Target recording {target} does not exist; check the path.")
    return target


#: FL settings a shadow run must share with its target for the attack to transfer.
_MIRRORED = ("algorithm", "lr", "batch_size", "local_epochs", "optimizer", "model", "hidden", "dropout",
             "normalization", "client_fraction", "n_classes")
#: Defenses whose recorded updates are what a key holder decrypts, not what the server sees.
_KEY_HOLDER_VIEW = ("sefl",)


def setup_warnings(target: PathLike, shadows: Sequence[PathLike] = ()) -> list[str]:
    """Sentences on what weakens or qualifies an attack's figures on ``target``.

    Few clients (a coarse ASR with a wide interval), one client per round, shadow
    runs whose defenses or FL settings differ from the target's (the attacker
    learned from other updates), few shadow speakers or a single one of a
    gender, and a key holder's view under secure aggregation.
    """
    out: list[str] = []
    with UpdateStore.open(target, warn_incomplete=False) as store:
        config = dict(store.config)
        n_clients = len(set(store.index["client_id"].tolist()))
        rounds = store.index["server_round"]
        per_round = int(np.bincount(rounds - rounds.min()).max()) if len(rounds) else 0
    if 0 < n_clients < FEW_TARGET_CLIENTS:
        out.append(f"Only {n_clients} clients sent updates: each one moves the ASR by {100 / n_clients:.0f} points, "
                   "so the interval is wide and the figure coarse.")
    if 0 < per_round < 2:
        out.append(f"At most {per_round} client per round: each global step is one client's update, so the global "
                   "model follows single clients and secure aggregation hides nothing from whoever decrypts the "
                   "aggregate; raise the client fraction.")
    speakers: dict[str, str] = {}
    target_defenses = list((config.get("defenses") or {}).get("names", []))
    view = [d for d in target_defenses if d in _KEY_HOLDER_VIEW]
    if view:
        out.append(f"The target ran secure aggregation ({', '.join(view)}): the server sees ciphertexts only; "
                   "these figures are what a holder of the private key (any client) sees after decryption.")
    reported: set[str] = set()
    for path in shadows:
        if not Path(path).is_file():  # a saved model's shadow runs may have moved: nothing to compare
            continue
        with UpdateStore.open(path, warn_incomplete=False) as shadow:
            other = dict(shadow.config)
            truth = shadow.ground_truth()
        if "speaker_id" in truth and "gender" in truth:
            speakers.update(zip(map(str, truth["speaker_id"].tolist()), map(str, truth["gender"].tolist()),
                                strict=True))
        shadow_defenses = list((other.get("defenses") or {}).get("names", []))
        if shadow_defenses != target_defenses and "defenses" not in reported:
            reported.add("defenses")
            out.append(
                f"The shadow runs' defenses ({', '.join(shadow_defenses) or 'none'}) differ from the target's "
                f"({', '.join(target_defenses) or 'none'}): the attacker learned from other updates than the "
                "target sends, which can push its ASR far from the real leakage (even below chance); record "
                "shadow runs with the target's defense."
            )
        differing = [k for k in _MIRRORED if k in config and k in other and config[k] != other[k]]
        new = [k for k in differing if k not in reported]
        if new:
            reported.update(new)
            out.append(f"{Path(path).name} differs from the target in {', '.join(new)}: the shadow setup does not "
                       "mirror the target's, so the attack may not transfer.")
    if speakers:
        out.extend(shadow_speaker_warnings(list(speakers.values())))
    return out


#: Fewer target clients than this make the ASR coarse.
FEW_TARGET_CLIENTS = 10
#: Fewer distinct shadow speakers than this let an attack learn speakers rather than gender.
FEW_SHADOW_SPEAKERS = 8


def shadow_speaker_warnings(genders: Sequence[str]) -> list[str]:
    """Sentences on shadow corpora too small to teach gender: few speakers, or a single speaker of a gender.

    ``genders`` holds one entry per distinct shadow speaker.

    Examples
    --------
    >>> shadow_speaker_warnings(["F", "M"] * 10)
    []
    >>> len(shadow_speaker_warnings(["F", "M", "M", "M"]))
    2
    """
    out: list[str] = []
    n = len(genders)
    if 0 < n < FEW_SHADOW_SPEAKERS:
        out.append(f"The shadow runs hold only {n} speakers: with so few, the attack learns which shadow speakers "
                   "resemble which target clients as readily as it learns gender, and an attacker with meaningless "
                   "labels can score as high; run the permutation test (--permutations) or add shadow speakers.")
    for gender, word in (("F", "female"), ("M", "male")):
        count = sum(g == gender for g in genders)
        if n and count <= 1:
            out.append(f"The shadow runs hold {count} {word} speaker{'' if count == 1 else 's'}: the attack's notion "
                       f"of '{word}' is {'that one speaker' if count == 1 else 'undefined'}, so its figure says "
                       "little about gender; add shadow speakers of that gender.")
    return out


def _check_permutations(permutations: int) -> None:
    if not isinstance(permutations, (int, np.integer)) or isinstance(permutations, bool) or permutations < 0:
        raise InvalidParameterError(f"permutations must be an integer >= 0. Got {permutations!r}.")


def _uncertainty(
    attack: Attack, target: PathLike, shadows: Sequence[PathLike], *, layers: Sequence[int] | Sequence[str] | None,
    repeats: int, seed: int, permutations: int, jackknife: bool, observed: Mapping[str, float] | None,
    public_corpora: Sequence[str] = (), data_roots: Sequence[PathLike] = (), cache_dir: PathLike | None = None,
    per_layer: bool = False,
) -> dict[str, Any]:
    """The permutation test and the shadow-run jackknife of one fitted attack: ``{"significance", "jackknife"}``."""
    from fedaudit.audit import significance as sig

    if not attack.needs_shadow:
        raise InvalidParameterError(
            f"The {attack.name} attack is not fitted on shadow recordings: --permutations and --jackknife refit on "
            "the shadow runs, so they apply to shadow-trained attacks only."
        )
    files = [Path(p) for p in shadows]
    missing = [str(p) for p in files if not p.is_file()]
    if missing or not files:
        raise InvalidParameterError(
            f"The permutation test and the jackknife refit the attack on its shadow recordings, but "
            f"{', '.join(missing) or 'none'} {'is' if len(missing) == 1 else 'are'} not there; give them with --shadow."
        )
    public = None
    if attack.needs_public:
        public = load_public_features(public_corpora or DEFAULT_PUBLIC_CORPORA, target=target, roots=data_roots,
                                      cache_dir=cache_dir)
    with _opened(files) as stores, _opened([target]) as (store,):
        if per_layer:
            statistic = sig.layer_statistic(repeats=repeats, seed=seed)
        else:
            chosen = resolve_layers(layers, store.layers) if layers is not None else None
            base = sig.asr_statistic(repeats=repeats, seed=seed)

            def statistic(a: Attack, t: UpdateStore) -> Mapping[str, float]:
                return base(a.restricted(chosen) if chosen is not None else a, t)

        if observed is None:
            observed = dict(statistic(attack, store))
        out: dict[str, Any] = {}
        if permutations:
            out["significance"] = sig.permutation_test(
                attack, shadows=stores, target=store, statistic=statistic, n_permutations=permutations, seed=seed,
                public=public, observed=observed,
            )
        if jackknife:
            out["jackknife"] = sig.shadow_jackknife(attack, shadows=stores, target=store, statistic=statistic,
                                                    public=public, observed=observed)
    return out


def attack_target(
    target: PathLike,
    *,
    attack: str = "stats",
    model: PathLike | None = None,
    shadows: Sequence[PathLike] = (),
    public_corpora: Sequence[str] = (),
    data_roots: Sequence[PathLike] = (),
    cache_dir: PathLike | None = None,
    layers: Sequence[int] | Sequence[str] | None = None,
    n_updates: Sequence[int | str] = (1,),
    repeats: int = 10,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    save_as: str | None = None,
    models_dir: PathLike = "attack_models",
    overwrite: bool = False,
    permutations: int = 0,
    jackknife: bool = False,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> AttackReport:
    """Fit an attack for a target (or load a saved one), optionally save it, and score it: ``fedaudit attack``.

    Parameters
    ----------
    target
        The target recording.
    attack
        Registry key of the attack to fit (ignored with ``model``).
    model
        A saved attack model (``.json``) to score instead of fitting.
    shadows
        Shadow recordings or folders of them.
    public_corpora
        Public corpora, for an attack that needs public features
        (default :data:`DEFAULT_PUBLIC_CORPORA`), in the target's feature set.
    data_roots, cache_dir
        Roots of non-demo public corpora, and the feature cache.
    layers
        Layers to attack (1-based numbers or names).
    n_updates, repeats, seed
        As for :func:`score_attack`; ``seed`` also seeds the fit.
    options
        Further hyper-parameters of the attack.
    save_as
        Save the fitted attack as ``<models_dir>/<save_as>``.
    models_dir
        Folder of saved attack models.
    overwrite
        Replace a saved model of the same name.
    permutations
        Test the single-update ASR against this many refits on gender-free relabellings of the
        shadow speakers (:func:`fedaudit.audit.significance.permutation_test`); 0 skips the test.
    jackknife
        Also refit leaving one shadow run out at a time, for an interval over shadow runs.
    progress
        Given to an attack that reports its fit's progress (``progress`` parameter, e.g. ``cnn``).
    """
    target = _check_target(target)
    _check_permutations(permutations)
    if (permutations or jackknife) and model is None and not _attack_class(attack).needs_shadow:
        raise InvalidParameterError(
            f"The {attack} attack is not fitted on shadow recordings: --permutations and --jackknife refit on "
            "the shadow runs, so they apply to shadow-trained attacks only."
        )
    saved: Path | None = None
    if model is not None:
        fitted: Attack | PathLike = load_attack(model) if permutations or jackknife else model
        card: dict[str, Any] = dict(getattr(fitted, "card_", {}))
    else:
        fitted, card = _fit_for_target(
            attack, target, shadows=shadows, public_corpora=public_corpora, data_roots=data_roots,
            cache_dir=cache_dir, layers=layers, seed=seed, options=options, progress=progress,
        )
        if save_as:
            saved = save_attack_model(fitted, save_as, models_dir=models_dir, card=card, overwrite=overwrite)
    report = score_attack(fitted, target, layers=layers, n_updates=n_updates, repeats=repeats, seed=seed, card=card)
    shadow_paths = [p for p in (card or report.card).get("shadow_recordings", [])]
    report = replace(report, warnings=setup_warnings(target, shadow_paths))
    if (permutations or jackknife) and report.results:
        assert isinstance(fitted, Attack)
        report = replace(report, **_uncertainty(
            fitted, target, shadow_paths, layers=layers, repeats=repeats, seed=seed, permutations=permutations,
            jackknife=jackknife, observed={"1": report.results["1"].asr} if "1" in report.results else None,
            public_corpora=public_corpora, data_roots=data_roots, cache_dir=cache_dir,
        ))
    if saved is not None:
        report = replace(report, saved_model=str(saved))
    return report


def leakage_of_target(
    target: PathLike,
    *,
    attack: str = "stats",
    model: PathLike | None = None,
    shadows: Sequence[PathLike] = (),
    repeats: int = 10,
    seed: int = 0,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> tuple[Attack, dict[str, AttackResult], list[str]]:
    """Fit a per-layer attack for a target (or load a saved one) and measure each layer's leakage: ``fedaudit leakage``.

    Every layer of the recording is one row, whatever the model (``fc1``..., ``conv1``, ``lstm1``, ...):
    the names come from the recording. ``progress`` is given to an attack that reports its fit's progress.

    Returns
    -------
    tuple
        The attack, :func:`layer_leakage` of it on the target, and :func:`setup_warnings`.
    """
    target = _check_target(target)
    if model is not None:
        fitted = load_attack(model)
    else:
        if not _attack_class(attack).per_layer:
            per_layer = " or ".join(sorted(n for n, c in ATTACKS.items() if c.per_layer))
            raise InvalidParameterError(f"Layer-wise leakage needs a per-layer attack: use --attack {per_layer}.")
        fitted, _ = _fit_for_target(
            attack, target, shadows=shadows, public_corpora=(), data_roots=(), cache_dir=None, layers=None,
            seed=seed, options=None, progress=progress,
        )
    card = getattr(fitted, "card_", None) or {}
    shadow_paths = list(card.get("shadow_recordings", [])) if model is not None else [str(p) for p in shadow_files(shadows)]
    return fitted, layer_leakage(fitted, target, repeats=repeats, seed=seed), setup_warnings(target, shadow_paths)


def layer_significance(
    attack: Attack,
    target: PathLike,
    *,
    shadows: Sequence[PathLike] = (),
    permutations: int,
    repeats: int = 10,
    seed: int = 0,
    observed: Mapping[str, AttackResult] | None = None,
) -> dict[str, Significance]:
    """Permutation test of every row of :func:`layer_leakage` (each layer alone, and fused).

    Each refit on a gender-free relabelling of the shadow speakers is scored layer by layer, so
    one refit serves every row. ``shadows`` defaults to the shadow recordings named in a loaded
    attack model's card; ``observed`` (the rows already measured) saves scoring the attack again.
    """
    _check_permutations(permutations)
    if permutations == 0:
        return {}
    if not shadows:
        shadows = list((getattr(attack, "card_", None) or {}).get("shadow_recordings", []))
    present = all(Path(p).exists() for p in shadows)
    files = [str(p) for p in (shadow_files(shadows) if present else shadows)]
    found = _uncertainty(attack, _check_target(target), files,
                         layers=None, repeats=repeats, seed=seed, permutations=permutations, jackknife=False,
                         per_layer=True, observed=None if observed is None else {k: r.asr for k, r in observed.items()})
    return found["significance"]
