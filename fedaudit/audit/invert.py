"""Pipeline step: reconstruct clients' data from a recording and score it against what they trained on.

What ``fedaudit invert`` does, as a library function: open the recording,
check that the chosen reconstruction method applies to it, pick a few updates
of each client across the run (seeded), run the method, assemble the truth for
scoring *from the evaluation side only* and write the reconstructions beside
the recording.

The truth is never shown to the method. It is rebuilt here, the way the
simulator built it (:func:`fedaudit.fl.simulate.simulate`): the corpus the
recording names is loaded again, split into the same clients with
:func:`~fedaudit.data.clients.split_clients` and normalised with
:func:`~fedaudit.data.normalize.normalize_features`, and the rebuilt clients are
checked against the recording's client table before anything is scored. Gender
and speaker come from the recording's evaluation-only ground truth.

What the recording cannot tell, and how it is scored instead:

- FedSGD records the gradient of one mini-batch, but not which utterances were
  in it. Reconstructed features are matched against the client's whole
  training set, and label counts are scored against the client's training-set
  emotion proportions scaled to the batch size (exact only when the batch is
  the whole training set).
- FedAvg trains on every training utterance ``local_epochs`` times, so the
  true label counts are the training set's emotion counts times the epochs.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedaudit.config import FLConfig
from fedaudit.exceptions import CorpusError, InvalidParameterError, OutputExistsError, RecordingError
from fedaudit.types import EMOTIONS

if TYPE_CHECKING:
    from fedaudit.attacks.reconstruct import Reconstruction, ReconstructionMethod
    from fedaudit.data.table import FeatureTable
    from fedaudit.record.reader import UpdateStore

__all__ = [
    "ClientTruth",
    "FeatureError",
    "INVERSION_ENCODING",
    "INVERSION_ENCODING_VERSION",
    "INVERSION_SCHEMA",
    "INVERSION_SCHEMA_VERSION",
    "InversionResult",
    "METHOD_MODULES",
    "Metric",
    "RunTruth",
    "applicable_methods",
    "check_applies",
    "default_output",
    "invert_recording",
    "load_methods",
    "read_inversion",
    "run_truth",
    "select_updates",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: JSON form of :class:`InversionResult`.
INVERSION_SCHEMA = "fedaudit.inversion"
INVERSION_SCHEMA_VERSION = "1.0.0"
#: The HDF5 file of reconstructions written beside a recording.
INVERSION_ENCODING = "fedaudit.reconstructions"
INVERSION_ENCODING_VERSION = "1.0.0"

#: Modules that register reconstruction methods, imported on first use (missing ones are skipped).
METHOD_MODULES: tuple[str, ...] = (
    "fedaudit.attacks.reconstruct.analytic",
    "fedaudit.attacks.reconstruct.labels",
    "fedaudit.attacks.reconstruct.optimize",
    "fedaudit.attacks.reconstruct.model_inversion",
)

#: Defenses whose recorded updates are what a key holder decrypts, not what the server sees.
_KEY_HOLDER_DEFENSES = frozenset({"sefl"})

#: Standard deviations at or below this are left undivided by normalisation (as in fedaudit.data.normalize).
_EPS = 1e-8

#: Progress callback: ``progress(done, total)`` after each update reconstructed.
ProgressFn = Callable[[int, int], None]


# -- methods --------------------------------------------------------------------------------------
def load_methods() -> dict[str, type[ReconstructionMethod]]:
    """The registered reconstruction methods, after importing every module of :data:`METHOD_MODULES`."""
    from fedaudit.attacks.reconstruct import RECONSTRUCTIONS

    for name in METHOD_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # the module exists but something it needs is missing: say so
                raise
    return RECONSTRUCTIONS


def _method(name: str, options: Mapping[str, Any], seed: int) -> ReconstructionMethod:
    methods = load_methods()
    if name not in methods:
        raise InvalidParameterError(
            f"Unknown reconstruction method {name!r}; choose one of {', '.join(sorted(methods)) or 'none'}."
        )
    cls = methods[name]
    params = inspect.signature(cls.__init__).parameters
    accepted = {p for p in params if p != "self" and params[p].kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InvalidParameterError(
            f"The {name} method takes the options {sorted(accepted) or 'none'}; got {unknown}."
        )
    kwargs = dict(options)
    if "seed" in accepted and "seed" not in kwargs:
        kwargs["seed"] = seed
    return cls(**kwargs)


def _method_config(method: ReconstructionMethod) -> dict[str, Any]:
    """The method's parameters as set in ``__init__`` (its public attributes named like the parameters)."""
    params = inspect.signature(type(method).__init__).parameters
    out = {}
    for p in params:
        if p != "self" and hasattr(method, p):
            value = getattr(method, p)
            out[p] = value if isinstance(value, (int, float, str, bool, type(None), list, tuple, dict)) else repr(value)
    return out


def check_applies(method: ReconstructionMethod, store: UpdateStore) -> None:
    """Refuse a method that cannot read ``store``, in one sentence; prepares the method otherwise.

    Raises
    ------
    InvalidParameterError
        The method needs the round's global weights and the recording holds none, or the
        method's own :meth:`~fedaudit.attacks.reconstruct.ReconstructionMethod.prepare` refuses
        the recording (e.g. an input layer it cannot read).
    """
    from fedaudit.attacks.reconstruct import ReconstructionContext

    if method.needs_globals and not store.has_globals:
        raise InvalidParameterError(
            f"The {method.name} method reconstructs from the round's global weights, but {store.path} was "
            "recorded without them; re-record with --store-globals, or choose a method that needs none "
            f"({', '.join(applicable_methods(has_globals=False)) or 'none is registered'})."
        )
    if store.n_updates == 0:
        raise RecordingError(f"{store.path} holds no updates; nothing to reconstruct.")
    method.prepare(ReconstructionContext.from_store(store))


def applicable_methods(*, has_globals: bool) -> list[str]:
    """Registered methods that need no global weights (``has_globals=False``), or all of them."""
    return sorted(n for n, c in load_methods().items() if has_globals or not c.needs_globals)


# -- which updates ----------------------------------------------------------------------------------
def select_updates(
    store: UpdateStore, *, clients: Sequence[int] | None = None, per_client: int = 3, seed: int = 0
) -> np.ndarray:
    """Rows to reconstruct: up to ``per_client`` updates of each client, spread across the run.

    A client's updates (in round order) are cut into ``per_client`` equal runs of rounds and
    one update is drawn from each, with a generator seeded by ``(seed, client_id)``, so that the
    choice of one client does not depend on which other clients are chosen.

    Returns
    -------
    numpy.ndarray
        Row numbers, ascending (round order).

    Raises
    ------
    InvalidParameterError
        ``per_client < 1``, or a requested client has no update in the recording.
    """
    if isinstance(per_client, bool) or not isinstance(per_client, (int, np.integer)) or per_client < 1:
        raise InvalidParameterError(f"The updates per client must be an integer >= 1; got {per_client!r}.")
    present = sorted({int(c) for c in np.unique(store.index["client_id"])})
    if clients is None:
        chosen = present
    else:
        chosen = sorted({int(c) for c in clients})
        missing = [c for c in chosen if c not in set(present)]
        if missing:
            shown = ", ".join(map(str, present[:12])) + (", ..." if len(present) > 12 else "")
            raise InvalidParameterError(
                f"Client(s) {', '.join(map(str, missing))} sent no update in {store.path}; the clients with "
                f"updates are {shown}."
            )
    rows: list[int] = []
    for cid in chosen:
        own = store.client_rows(cid)
        if len(own) <= per_client:
            rows.extend(int(r) for r in own)
            continue
        rng = np.random.default_rng([int(seed), cid])
        rows.extend(int(part[rng.integers(len(part))]) for part in np.array_split(own, per_client))
    return np.asarray(sorted(rows), dtype=np.int64)


# -- the truth (evaluation side only) ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, eq=False)
class ClientTruth:
    """What one client really trained on, for scoring (never shown to a method).

    Parameters
    ----------
    client_id, speaker_id, gender
        The client and its evaluation-only attributes (``None`` when the recording has none).
    features
        The client's training utterances in the model's input space (normalised as the run
        normalised them), shape ``(n_train, n_features)``.
    raw_features
        The same utterances in the features' own units (as extracted).
    mean, std
        De-normalisation of this client's input space: ``raw = features * std + mean`` (zero
        mean and unit std for ``normalization="none"``; the speaker's own statistics for
        ``"speaker"``; the training clients' for ``"global"``).
    emotion_counts
        Training utterances of each emotion (order of :data:`fedaudit.types.EMOTIONS`).
    """

    client_id: int
    speaker_id: str | None
    gender: str | None
    features: np.ndarray
    raw_features: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    emotion_counts: np.ndarray

    @property
    def n_train(self) -> int:
        return int(len(self.features))


@dataclass(frozen=True, kw_only=True, eq=False)
class RunTruth:
    """The truth of a whole run: its clients, the rest of the corpus, and how the run was set up.

    ``table`` is the run's whole feature table, normalised as the run normalised it (training
    clients, their validation utterances and the held-out speakers), with ``raw_table`` in the
    features' own units: the gallery of speakers a reconstruction can be identified against.
    """

    clients: Mapping[int, ClientTruth]
    table: FeatureTable
    raw_table: FeatureTable
    feature_names: tuple[str, ...]
    feature_set: str
    normalization: str
    algorithm: str
    local_epochs: int
    batch_size: int

    def label_truth(self, client_id: int, *, num_samples: int, kind: str) -> tuple[np.ndarray, str]:
        """True label counts behind one update, and how exact they are.

        Returns
        -------
        (numpy.ndarray, str)
            Counts of each class (float: expected counts when not exact), and ``"exact"`` (FedAvg;
            a FedSGD batch holding the whole training set) or ``"proportions"`` (a FedSGD batch:
            the training set's emotion proportions scaled to the batch size).
        """
        truth = self.clients[int(client_id)]
        counts = truth.emotion_counts.astype(np.float64)
        if kind == "pseudo_gradient" and num_samples == truth.n_train * self.local_epochs:
            return counts * self.local_epochs, "exact"
        if kind == "gradient" and num_samples == truth.n_train:
            return counts, "exact"
        return counts * (num_samples / max(counts.sum(), 1.0)), "proportions"


def _fl_config(config: Mapping[str, Any]) -> FLConfig:
    known = {f.name for f in fields(FLConfig)}
    try:
        return FLConfig.from_dict({k: v for k, v in config.items() if k in known})
    except (TypeError, InvalidParameterError) as err:
        raise RecordingError(f"The recording's configuration does not describe a run fedaudit can rebuild ({err}).") \
            from None


def _load_table(store: UpdateStore, corpora: Sequence[str] | None, roots: Sequence[PathLike],
                cache_dir: PathLike | None) -> FeatureTable:
    from fedaudit.data.sources import load_features

    data = dict(store.config.get("data") or {})
    names = list(corpora) if corpora else list(data.get("corpora") or [])
    if not names:
        raise RecordingError(
            f"{store.path} does not name the corpus it was trained on; pass the corpus (--corpus) to score against."
        )
    kwargs: dict[str, Any] = {}
    frame_shape = data.get("frame_shape")
    if frame_shape:
        kwargs["n_frames"] = int(frame_shape[0])
    return load_features(names, roots=list(roots), feature_set=str(data.get("feature_set", "emobase")),
                         cache_dir=cache_dir, n_jobs=1, **kwargs)


def _check_split(store: UpdateStore, split: Any, table: FeatureTable) -> None:
    """The rebuilt clients are the recording's clients, or one sentence says how they differ."""
    recorded = {int(c): (int(n), int(v)) for c, n, v in
                zip(store.client_ids, store.clients["n_train"], store.clients["n_val"], strict=True)}
    rebuilt = {c.client_id: (len(c.train_rows), len(c.val_rows)) for c in split.clients}
    corpora = ", ".join(sorted(set(table.corpus.tolist())))
    hint = "pass the corpus (and data roots) the run was recorded with"
    if len(recorded) != len(rebuilt):
        raise CorpusError(
            f"{corpora} gives {len(rebuilt)} clients with the recorded split, but {store.path} has "
            f"{len(recorded)}; {hint}."
        )
    for cid, (n_train, n_val) in recorded.items():
        if rebuilt.get(cid) != (n_train, n_val):
            got = rebuilt.get(cid)
            raise CorpusError(
                f"Client {cid} of {store.path} trained on {n_train} utterances ({n_val} for validation), but "
                f"{corpora} rebuilds it with {got[0] if got else 0} ({got[1] if got else 0}); {hint}."
            )
    speakers = store.ground_truth().get("speaker_id")
    if speakers is not None:
        by_id = dict(zip(store.client_ids.tolist(), speakers.tolist(), strict=True))
        for c in split.clients:
            if str(by_id.get(c.client_id)) != c.speaker_id:
                raise CorpusError(
                    f"Client {c.client_id} of {store.path} is speaker {by_id.get(c.client_id)!r}, but {corpora} "
                    f"rebuilds it as {c.speaker_id!r}; {hint}."
                )


def run_truth(
    store: UpdateStore,
    *,
    table: FeatureTable | None = None,
    corpora: Sequence[str] | None = None,
    roots: Sequence[PathLike] = (),
    cache_dir: PathLike | None = None,
) -> RunTruth:
    """Rebuild what every client of a recorded run trained on: its split and normalisation.

    Parameters
    ----------
    store
        The recording (its configuration names the corpus, feature set, split and normalisation).
    table
        The run's feature table (not normalised), when at hand; otherwise the corpora are loaded.
    corpora, roots, cache_dir
        Corpora to load instead of those the recording names, one root per non-demo corpus,
        and the feature cache.

    Raises
    ------
    CorpusError
        The corpus does not rebuild the recording's clients (other sizes or speakers).
    """
    from fedaudit.data.clients import split_clients
    from fedaudit.data.normalize import normalize_features

    config = dict(store.config)
    fl = _fl_config(config)
    if table is None:
        table = _load_table(store, corpora, roots, cache_dir)
    data = dict(config.get("data") or {})
    if data.get("n_features") not in (None, table.n_features):
        raise CorpusError(
            f"{store.path} was trained on {data.get('n_features')} features, the corpus gives {table.n_features}; "
            "pass the corpus the run was recorded with."
        )
    # Exactly as the simulator: split, then normalise with the training clients' statistics.
    split = split_clients(table, n_folds=fl.n_folds, fold=fl.fold, clients_per_speaker=fl.clients_per_speaker,
                          val_fraction=fl.val_fraction, seed=fl.seed)
    _check_split(store, split, table)
    train_mask = np.zeros(len(table), dtype=bool)
    train_mask[split.train_mask_rows] = True
    normalised = normalize_features(table, method=fl.normalization, train_mask=train_mask)
    stats = _normalisation_stats(table, fl.normalization, train_mask)
    truth = store.ground_truth()
    by_id = {k: dict(zip(store.client_ids.tolist(), v.tolist(), strict=True)) for k, v in truth.items()}
    label = {e: i for i, e in enumerate(EMOTIONS)}
    clients = {}
    for c in split.clients:
        rows = c.train_rows
        mean, std = stats(c.speaker_id)
        clients[c.client_id] = ClientTruth(
            client_id=c.client_id, speaker_id=by_id.get("speaker_id", {}).get(c.client_id),
            gender=by_id.get("gender", {}).get(c.client_id), features=normalised.x[rows],
            raw_features=table.x[rows], mean=mean, std=std,
            emotion_counts=np.bincount([label[e] for e in table.emotion[rows]], minlength=len(EMOTIONS)),
        )
    names = tuple(table.feature_names) or tuple(f"feature {i + 1}" for i in range(table.n_features))
    return RunTruth(clients=clients, table=normalised, raw_table=table, feature_names=names,
                    feature_set=table.feature_set, normalization=fl.normalization, algorithm=fl.algorithm,
                    local_epochs=fl.local_epochs, batch_size=fl.batch_size)


def _normalisation_stats(table: FeatureTable, method: str,
                         train_mask: np.ndarray) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    """``stats(speaker) -> (mean, std)`` that undo :func:`normalize_features` for one speaker's rows.

    Utterance-level tables use :func:`fedaudit.attacks.reconstruct.scores.normalization_stats`;
    frame-level tables repeat the per-coefficient statistics over valid frames for every frame.
    """
    d = table.n_features
    if method == "none":
        return lambda speaker: (np.zeros(d), np.ones(d))

    def safe(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mean, np.where(std > _EPS, std, 1.0)  # standardize() divides constant features by 1

    if table.frame_shape is not None:
        t, c = table.frame_shape
        valid = table.frame_mask()
        frames = table.frames().astype(np.float64)

        def frame_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            v = frames[rows][valid[rows]]
            return np.tile(v.mean(axis=0), t), np.tile(v.std(axis=0), t)

        if method == "speaker":
            return lambda speaker: safe(*frame_stats(table.speaker_id == speaker))
        glob = safe(*frame_stats(train_mask))
        return lambda speaker: glob
    from fedaudit.attacks.reconstruct.scores import normalization_stats

    mean, std = normalization_stats(table.x, table.speaker_id, method=method, train_mask=train_mask)
    first = {spk: i for i, spk in reversed(list(enumerate(table.speaker_id.tolist())))}
    return lambda speaker: (mean[first[speaker]], std[first[speaker]])


# -- the result -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Metric:
    """One figure of a reconstruction, with its 95% interval and the chance level it is read against.

    ``name`` is a short key (``"cosine"``, ``"label_accuracy"``); ``label`` says it in words;
    ``higher_is_better`` orients the comparison with ``chance``; ``unit`` names the unit of a
    value that has one (``None`` for a fraction or a similarity); ``n`` is how many items the
    figure averages (updates, reconstructed vectors or clients).
    """

    name: str
    label: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    chance: float | None
    higher_is_better: bool = True
    unit: str | None = None
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _finite_or_none(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class FeatureError:
    """Reconstruction error of one named acoustic feature, in the feature's own units."""

    name: str
    error: float | None
    ci_low: float | None
    ci_high: float | None
    chance: float | None
    unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _finite_or_none(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class InversionResult:
    """What one reconstruction method recovered from a recording, scored against the truth.

    The JSON form (:meth:`to_dict`) carries ``schema`` (:data:`INVERSION_SCHEMA`) and
    ``schema_version``; the audit results (``cells[].inversions``) and the report read it.
    """

    method: str
    produces: tuple[str, ...]
    recording: str
    output: str | None
    algorithm: str
    defenses: tuple[str, ...]
    view: str
    normalization: str
    feature_set: str
    n_clients: int
    n_updates: int
    n_clients_total: int
    updates_per_client: int
    clients: tuple[int, ...]
    rows: tuple[int, ...]
    seed: int
    label_truth: str | None
    metrics: tuple[Metric, ...]
    feature_errors: tuple[FeatureError, ...]
    per_client: tuple[Mapping[str, Any], ...]
    scores: Mapping[str, Any]
    caveats: tuple[str, ...]
    #: True and reconstructed values (features' own units) of a few named features for a few clients:
    #: ``{"features": [...], "units": [...], "clients": [{"client_id", "speaker_id", "true", "reconstructed"}]}``.
    examples: Mapping[str, Any]
    method_config: Mapping[str, Any]
    reconstruct_seconds: float
    versions: Mapping[str, str]
    created: str
    schema: str = INVERSION_SCHEMA
    schema_version: str = INVERSION_SCHEMA_VERSION

    def metric(self, name: str) -> Metric | None:
        """The metric called ``name``, or ``None``."""
        return next((m for m in self.metrics if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: plain dicts, lists, strings, numbers and ``None`` (never NaN)."""
        out: dict[str, Any] = {"schema": self.schema, "schema_version": self.schema_version}
        for f in fields(self):
            if f.name in out:
                continue
            value = getattr(self, f.name)
            if f.name in ("metrics", "feature_errors"):
                value = [v.to_dict() for v in value]
            out[f.name] = _plain(value)
        return out

    def summary(self) -> dict[str, Any]:
        """The compact JSON form the audit results hold (no per-client rows, no raw scores)."""
        out = self.to_dict()
        for key in ("rows", "per_client", "scores", "clients", "examples"):
            out.pop(key, None)
        return out


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return _finite_or_none(value)


# -- the file of reconstructions ----------------------------------------------------------------------
def default_output(recording: PathLike, method: str) -> Path:
    """``<recording stem>.invert-<method>.h5`` beside the recording."""
    p = Path(recording)
    return p.with_name(f"{p.stem}.invert-{method}.h5")


def _write_reconstructions(out: Path, recs: Sequence[Reconstruction], *, meta: Mapping[str, Any],
                           scores: Mapping[str, Any], n_features: int, n_classes: int) -> None:
    """Write through a temporary file beside ``out`` and rename, so a failure leaves no half file."""
    import h5py

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"] = INVERSION_ENCODING
            f.attrs["encoding-version"] = INVERSION_ENCODING_VERSION
            text = h5py.string_dtype("utf-8")
            f.create_dataset("config", data=json.dumps(_plain(meta), sort_keys=True), dtype=text)
            f.create_dataset("scores", data=json.dumps(_plain(scores), sort_keys=True, allow_nan=False), dtype=text)
            f.create_dataset("info", data=json.dumps([_plain(dict(r.info)) for r in recs]), dtype=text)
            index = f.create_group("index")
            for key in ("row", "client_id", "server_round"):
                index.create_dataset(key, data=np.asarray([getattr(r, key) for r in recs], dtype=np.int64))
            if any(r.features is not None for r in recs):
                blocks = [np.zeros((0, n_features), np.float32) if r.features is None
                          else np.asarray(r.features, np.float32).reshape(-1, n_features) for r in recs]
                weights = [np.full(len(b), np.nan, np.float32) if r.feature_weights is None
                           else np.asarray(r.feature_weights, np.float32).reshape(-1) for r, b in zip(recs, blocks, strict=True)]
                g = f.create_group("features")
                g.create_dataset("values", data=np.concatenate(blocks), compression="gzip", chunks=True)
                g.create_dataset("weights", data=np.concatenate(weights))
                g.create_dataset("offsets", data=np.cumsum([0, *(len(b) for b in blocks)]).astype(np.int64))
            if any(r.label_counts is not None for r in recs):
                counts = np.full((len(recs), n_classes), np.nan)
                for i, r in enumerate(recs):
                    if r.label_counts is not None:
                        counts[i] = np.asarray(r.label_counts, np.float64)
                f.create_dataset("label_counts", data=counts)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_inversion(path: PathLike) -> dict[str, Any]:
    """Read a file written by :func:`invert_recording`: config, scores, index, features, label counts.

    Raises
    ------
    RecordingError
        The file is missing, not HDF5, or not a file of reconstructions.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"No file of reconstructions at {p}; run `fedaudit invert` first.")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("encoding-type") != INVERSION_ENCODING:
                raise RecordingError(f"{p} is not a file of reconstructions (encoding-type "
                                     f"{f.attrs.get('encoding-type')!r}); `fedaudit invert` writes them.")
            out: dict[str, Any] = {
                "encoding_version": str(f.attrs["encoding-version"]),
                "config": json.loads(f["config"].asstr()[()]), "scores": json.loads(f["scores"].asstr()[()]),
                "info": json.loads(f["info"].asstr()[()]),
                "index": {k: f["index"][k][()] for k in f["index"]},
            }
            if "features" in f:
                values, offsets = f["features/values"][()], f["features/offsets"][()]
                out["features"] = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
                weights = f["features/weights"][()]
                out["feature_weights"] = [weights[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
            if "label_counts" in f:
                out["label_counts"] = f["label_counts"][()]
    except OSError as err:
        raise RecordingError(f"{p} cannot be read as HDF5 ({err}); it may be damaged.") from None
    return out


# -- the step -------------------------------------------------------------------------------------
_DEFENSE_VIEWS = {
    "udp": "The updates were clipped and noised on the client (user-level DP) before the server saw them; the "
           "reconstructions are what the server recovers from the noised updates.",
    "ldp": "The updates were clipped and noised on the client (local DP) before the server saw them; the "
           "reconstructions are what the server recovers from the noised updates.",
    "dp-sgd": "Noise was added inside local training (DP-SGD); the reconstructions are what the server recovers "
              "from the update noisy training produced.",
    "prune": "The updates were pruned on the client; the reconstructions read only the entries that were sent.",
    "sefl": "Under secure aggregation the server sees ciphertexts only: these reconstructions are what a holder "
            "of the decryption key (any client) recovers after decrypting an update, not the server's view.",
}


def _view(defenses: Sequence[str]) -> str:
    return "key holder" if _KEY_HOLDER_DEFENSES & set(defenses) else "server"


@contextlib.contextmanager
def _opened(path: PathLike | UpdateStore) -> Iterator[UpdateStore]:
    from fedaudit.record.reader import UpdateStore

    if isinstance(path, UpdateStore):
        yield path
        return
    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"No recording at {p}; check the path (recordings end in .h5).")
    with UpdateStore.open(p) as store:
        yield store


def invert_recording(
    path: PathLike | UpdateStore,
    *,
    method: str = "analytic",
    options: Mapping[str, Any] | None = None,
    clients: Sequence[int] | None = None,
    max_updates_per_client: int = 3,
    seed: int = 0,
    table: FeatureTable | None = None,
    corpora: Sequence[str] | None = None,
    roots: Sequence[PathLike] = (),
    cache_dir: PathLike | None = None,
    public: FeatureTable | None = None,
    public_corpora: Sequence[str] | None = None,
    public_roots: Sequence[PathLike] = (),
    out: PathLike | None = None,
    write: bool = True,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> InversionResult:
    """Reconstruct clients' data from a recording with one method, score it, and write it beside the recording.

    Parameters
    ----------
    path
        The recording (or an open store).
    method
        A registered reconstruction method (:data:`fedaudit.attacks.reconstruct.RECONSTRUCTIONS`).
    options
        Keyword arguments of the method (e.g. ``{"estimator": "present-share"}`` for ``labels``).
    clients
        Client ids to invert (default: every client with an update).
    max_updates_per_client
        Updates reconstructed per client, spread across the run (:func:`select_updates`).
    seed
        Seed of the choice of updates, of the method (when it takes one) and of the scores.
    table
        The run's feature table (not normalised), when at hand; otherwise the corpus the
        recording names (or ``corpora``, with ``roots``) is loaded. Used for scoring only.
    public, public_corpora, public_roots
        Public acoustic features (the attacker's, never the target's speakers) for the gender
        classifier that labels reconstructions: a table, or corpora to load (default demo-shadow).
    out
        The file of reconstructions (default :func:`default_output`); ``write=False`` writes none.
    force
        Replace an existing output file.
    progress
        ``progress(done, total)`` after each update.

    Returns
    -------
    InversionResult
        Scores with 95% intervals and chance levels, the caveats, and where the file went.

    Raises
    ------
    InvalidParameterError
        Unknown method or option, a method that does not apply to the recording, unknown clients.
    OutputExistsError
        The output exists and ``force`` is false (checked before any work).
    CorpusError
        The corpus does not rebuild the recording's clients.
    """
    from fedaudit.attacks.reconstruct import observed_updates
    from fedaudit.record import library_versions

    chosen = _method(method, dict(options or {}), seed)
    with _opened(path) as store:
        check_applies(chosen, store)
        target = default_output(store.path, method) if out is None else Path(out)
        if write:
            if target.exists() and not force:
                raise OutputExistsError(f"{target} already exists.")
            if not target.parent.is_dir():
                raise InvalidParameterError(
                    f"The folder {target.parent} does not exist; create it or choose another --out."
                )
        rows = select_updates(store, clients=clients, per_client=max_updates_per_client, seed=seed)
        truth = run_truth(store, table=table, corpora=corpora, roots=roots, cache_dir=cache_dir)
        if public is None and "features" in chosen.produces:
            public = _public_table(store, public_corpora, public_roots, cache_dir)
        t0 = time.perf_counter()
        recs: list[Reconstruction] = []
        skipped: list[int] = []

        def finite(updates: Iterator[Any]) -> Iterator[Any]:
            for update in updates:
                if all(np.isfinite(a).all() for a in update.arrays.values()):
                    yield update
                else:  # a diverged run sends NaN or inf: nothing to reconstruct from
                    skipped.append(update.row)
                    if progress is not None:
                        progress(len(recs) + len(skipped), len(rows))

        updates = finite(observed_updates(store, rows, with_globals=store.has_globals))
        for rec in chosen.reconstruct_many(updates):
            recs.append(rec)
            if progress is not None:
                progress(len(recs) + len(skipped), len(rows))
        seconds = time.perf_counter() - t0
        if not recs:
            raise RecordingError(
                f"Every chosen update of {store.path} holds non-finite values (the run diverged); nothing to "
                "reconstruct from: choose other --clients, or re-record with a smaller learning rate."
            )
        rows = np.asarray([r.row for r in recs], dtype=np.int64)
        index = store.index
        kinds = {int(r): _kind(index, int(r)) for r in rows}
        samples = {int(r): int(index["num_samples"][int(r)]) for r in rows}
        config = dict(store.config)
        defenses = tuple((config.get("defenses") or {}).get("names") or ())
        n_total = len(store.client_ids)
        recording = str(store.path)
        complete = store.complete
    scored = _score(recs, truth, public=public, kinds=kinds, samples=samples, seed=seed,
                    n_classes=int(config.get("n_classes", len(EMOTIONS))))
    chosen_clients = tuple(sorted({int(r.client_id) for r in recs}))
    caveats = _caveats(truth, chosen, scored, n_clients=len(chosen_clients), defenses=defenses,
                       corpora=list(dict.fromkeys(truth.raw_table.corpus.tolist())), complete=complete)
    if skipped:
        caveats = (*caveats, f"{len(skipped)} of the {len(skipped) + len(recs)} chosen updates hold non-finite values "
                             "(the run diverged) and were left out.")
    result = InversionResult(
        method=chosen.name, produces=tuple(sorted(chosen.produces)), recording=recording,
        output=str(target) if write else None, algorithm=truth.algorithm, defenses=defenses, view=_view(defenses),
        normalization=truth.normalization, feature_set=truth.feature_set, n_clients=len(chosen_clients),
        n_updates=len(recs), n_clients_total=n_total, updates_per_client=int(max_updates_per_client),
        clients=chosen_clients, rows=tuple(int(r) for r in rows), seed=int(seed), label_truth=scored["label_truth"],
        metrics=tuple(scored["metrics"]), feature_errors=tuple(scored["feature_errors"]),
        per_client=tuple(scored["per_client"]), scores=scored["raw"], caveats=caveats, examples=scored["examples"],
        method_config=_method_config(chosen), reconstruct_seconds=seconds, versions=library_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if write:
        meta = {k: v for k, v in result.to_dict().items() if k not in ("scores", "per_client")}
        _write_reconstructions(target, recs, meta=meta, scores=result.to_dict(), n_features=truth.table.n_features,
                               n_classes=int(config.get("n_classes", len(EMOTIONS))))
    return result


def _kind(index: Mapping[str, np.ndarray], row: int) -> str:
    from fedaudit.record.format import KINDS

    return KINDS[int(index["kind"][row])]


def _public_table(store: UpdateStore, corpora: Sequence[str] | None, roots: Sequence[PathLike],
                  cache_dir: PathLike | None) -> FeatureTable:
    from fedaudit.audit.attack import DEFAULT_PUBLIC_CORPORA, load_public_features

    return load_public_features(list(corpora or DEFAULT_PUBLIC_CORPORA), target=store.config, roots=roots,
                                cache_dir=cache_dir, n_jobs=1)


def _caveats(truth: RunTruth, method: ReconstructionMethod, scored: Mapping[str, Any], *, n_clients: int,
             defenses: Sequence[str], corpora: Sequence[str], complete: bool) -> tuple[str, ...]:
    out = []
    if any(c.startswith("demo-") for c in corpora):
        out.append(f"The corpus ({', '.join(corpora)}) is synthetic demo data: the figures show how the "
                   "reconstruction works, not how much a real speech corpus leaks.")
    if n_clients < 10:
        out.append(f"Only {n_clients} client{'s' if n_clients != 1 else ''} inverted: one client moves a per-client "
                   f"rate by {100 / max(n_clients, 1):.0f} points, so the intervals are wide.")
    if truth.algorithm == "fedsgd":
        out.append("FedSGD records the gradient of one mini-batch but not which utterances were in it: "
                   "reconstructed features are matched against each client's whole training set"
                   + (", and label counts are scored against its training-set emotion proportions scaled to the "
                      "batch size (exact only when the batch is the whole training set)"
                      if "labels" in method.produces else "") + ".")
    if "features" in method.produces:
        norm = {"global": "standardised with the training clients' statistics",
                "speaker": "z-normalised per speaker with each speaker's own statistics",
                "none": "as extracted"}.get(truth.normalization, truth.normalization)
        holder = {"global": "a server that knows the statistics (or estimates them from public data) can map them "
                            "back", "speaker": "mapping them back needs the speaker's own statistics, which stay "
                            "on the client", "none": "they need no mapping back"}.get(truth.normalization, "")
        out.append(f"Reconstructions live in the model's input space (features {norm}); errors in the features' "
                   f"own units use the evaluator's de-normalisation statistics, and {holder}.")
    for d in defenses:
        if d in _DEFENSE_VIEWS:
            out.append(_DEFENSE_VIEWS[d])
    if not defenses:
        out.append("No defense: the server sees every client's update in the clear.")
    if not complete:
        out.append("The recording is incomplete: only the rounds it committed were read.")
    out.extend(scored.get("notes", ()))
    return tuple(dict.fromkeys(out))


#: Features the plot and the table always show when the feature set has them (Emo-Base means of six descriptors).
HEADLINE_FEATURES: tuple[str, ...] = (
    "F0_sma_amean", "pcm_loudness_sma_amean", "pcm_intensity_sma_amean", "voiceProb_sma_amean",
    "pcm_zcr_sma_amean", "mfcc_sma[1]_amean",
)
_BOOTSTRAP = 200
_TOP_FEATURES = 6
_PLOT_CLIENTS = 4
_PLOT_VECTORS = 20


def _ci(pair: Sequence[float] | None) -> tuple[float | None, float | None]:
    return (None, None) if pair is None else (float(pair[0]), float(pair[1]))


def _score(recs: Sequence[Reconstruction], truth: RunTruth, *, public: FeatureTable | None,
           kinds: Mapping[int, str], samples: Mapping[int, int], seed: int, n_classes: int) -> dict[str, Any]:
    """Score reconstructions with :mod:`fedaudit.attacks.reconstruct.scores` against the evaluation-side truth."""
    metrics: list[Metric] = []
    raw: dict[str, Any] = {}
    notes: list[str] = []
    per_client: dict[int, dict[str, Any]] = {
        int(c): {"client_id": int(c), "speaker_id": truth.clients[int(c)].speaker_id,
                 "gender": truth.clients[int(c)].gender, "n_updates": 0}
        for c in sorted({int(r.client_id) for r in recs})
    }
    for r in recs:
        per_client[int(r.client_id)]["n_updates"] += 1
    feature_rows: tuple[FeatureError, ...] = ()
    examples: dict[str, Any] = {}
    with_features = [r for r in recs if r.features is not None and len(np.atleast_2d(r.features))]
    if with_features:
        f_metrics, feature_rows, examples, f_raw = _score_features(with_features, truth, public=public, seed=seed,
                                                                   per_client=per_client, notes=notes)
        metrics += f_metrics
        raw.update(f_raw)
    label_truth = None
    with_labels = [r for r in recs if r.label_counts is not None]
    if with_labels:
        l_metrics, label_truth, l_raw = _score_labels(with_labels, truth, kinds=kinds, samples=samples,
                                                      per_client=per_client, n_classes=n_classes)
        metrics += l_metrics
        raw.update(l_raw)
    raw["metrics"] = [m.to_dict() for m in metrics]
    return {"metrics": metrics, "feature_errors": feature_rows, "per_client": list(per_client.values()),
            "examples": examples, "label_truth": label_truth, "raw": raw, "notes": notes}


def _score_features(recs: Sequence[Reconstruction], truth: RunTruth, *, public: FeatureTable | None, seed: int,
                    per_client: dict[int, dict[str, Any]], notes: list[str]) -> tuple[Any, ...]:
    from fedaudit.attacks.reconstruct import scores as sc

    d = truth.table.n_features
    recovered = [np.asarray(r.features, np.float64).reshape(-1, d) for r in recs]
    true = [truth.clients[int(r.client_id)].features for r in recs]
    pools = {c: np.concatenate([t.features for k, t in truth.clients.items() if k != c]) for c in per_client}
    others = [pools[int(r.client_id)] for r in recs]
    train = np.concatenate([t.features for t in truth.clients.values()])
    match = sc.match_score(recovered, true, others=others, corpus_mean=train.mean(axis=0), seed=seed)
    # Normal intervals over updates, clipped to the range of the figure (cosine in [-1, 1], NMSE >= 0).
    out = [
        Metric(name="cosine", label="cosine similarity to the matched training utterance", value=match.mean_cosine,
               ci_low=max(-1.0, match.cosine_ci[0]), ci_high=min(1.0, match.cosine_ci[1]), chance=match.chance_cosine,
               n=match.n_updates),
        Metric(name="nmse", label="normalised squared error to the matched utterance", value=match.mean_nmse,
               ci_low=max(0.0, match.nmse_ci[0]), ci_high=match.nmse_ci[1], chance=match.chance_nmse,
               higher_is_better=False, n=match.n_updates),
        Metric(name="recovered", label=f"share of vectors matched at cosine > {match.threshold:g}",
               value=match.share_above, ci_low=match.share_above_ci[0], ci_high=match.share_above_ci[1],
               chance=match.chance_share_above, unit="fraction", n=match.n_pairs),
    ]
    # Matched pairs (and the same matching to other clients' utterances: the chance pairs).
    rng = np.random.default_rng([seed, 7])
    pairs: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (update, recovered, true, std) per pair set
    chance_pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, (r, rec, tru) in enumerate(zip(recs, recovered, true, strict=True)):
        client = truth.clients[int(r.client_id)]
        m = sc.match_vectors(rec, tru)
        pairs.append((i, rec[m.rows], tru[m.cols], np.broadcast_to(client.std, (len(m.rows), d))))
        pool = others[i]
        pick = pool[rng.choice(len(pool), size=min(len(pool), len(tru)), replace=False)]
        c = sc.match_vectors(rec, pick)
        chance_pairs.append((rec[c.rows], pick[c.cols], np.broadcast_to(client.std, (len(c.rows), d))))
        row = per_client[int(r.client_id)]
        row.setdefault("_cos", []).append(float(m.cosine.mean()) if m.cosine.size else float("nan"))
    for row in per_client.values():
        row["mean_cosine"] = float(np.nanmean(row.pop("_cos"))) if "_cos" in row else None
    names = list(truth.feature_names)
    known = [c.speaker_id for c in truth.clients.values() if c.speaker_id is not None]
    train_rows = np.flatnonzero(np.isin(truth.raw_table.speaker_id, known)) if known else np.arange(len(truth.raw_table))
    spread = sc.speaker_spread(truth.raw_table.x[train_rows], truth.raw_table.speaker_id[train_rows])

    def errors(chosen: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], select: Sequence[str] | None) -> Any:
        return sc.feature_errors(np.concatenate([p[0] for p in chosen]), np.concatenate([p[1] for p in chosen]),
                                 names=names, std=np.concatenate([p[2] for p in chosen]), spread=spread,
                                 normalization=truth.normalization, select=select)

    observed = errors([p[1:] for p in pairs], None)
    chance = {f.name: f for f in errors(chance_pairs, None).features}
    # Shown: the headline descriptors, then the features recovered furthest below a chance reconstruction's error.
    gain = sorted((f.median / chance[f.name].median, f.name) for f in observed.features
                  if chance[f.name].median > 0 and np.isfinite(f.median))
    shown = list(dict.fromkeys([*[n for n in HEADLINE_FEATURES if n in names], *[n for _, n in gain[:_TOP_FEATURES]]]))
    chosen = errors([p[1:] for p in pairs], shown)
    boot = {n: [] for n in shown}
    for _ in range(_BOOTSTRAP):  # interval of each median error over updates (the update is the unit)
        draw = rng.integers(0, len(pairs), size=len(pairs))
        for f in errors([pairs[j][1:] for j in draw], shown).features:
            boot[f.name].append(f.median)
    feature_rows = tuple(
        FeatureError(name=f.name, error=f.median, ci_low=float(np.percentile(boot[f.name], 2.5)),
                     ci_high=float(np.percentile(boot[f.name], 97.5)), chance=chance[f.name].median,
                     unit=_unit_or_none(f.unit))
        for f in sorted(chosen.features, key=lambda f: shown.index(f.name)))
    raw = {"match": match.to_dict(), "feature_errors": observed.to_dict()}
    # Nearest speaker: one reconstruction per update (the weighted mean of its vectors), against every speaker
    # of the run's corpus (training clients and held-out speakers) in the model's input space.
    mean_rec = np.stack([_mean_vector(r, d) for r in recs])
    speakers = np.array([truth.clients[int(r.client_id)].speaker_id for r in recs], dtype=object)
    if all(sp is not None for sp in speakers):
        ids, centroids = sc.speaker_centroids(truth.table.x, truth.table.speaker_id)
        ident = sc.identification_score(mean_rec, speakers.astype(str), speakers=ids, centroids=centroids)
        out.append(Metric(name="identification", label=f"nearest of {len(ids)} speakers is the client (per update)",
                          value=ident.rate, ci_low=ident.ci[0], ci_high=ident.ci[1], chance=ident.chance,
                          unit="fraction", n=ident.n))
        raw["identification"] = ident.to_dict()
        if truth.normalization == "speaker":
            notes.append("Under per-speaker normalisation every speaker's centroid is zero in the model's input "
                         "space, so nearest-speaker identification is at chance by construction.")
        hits = (ids[np.argmin(((mean_rec[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)] == speakers.astype(str))
        for r, hit in zip(recs, hits, strict=True):
            row = per_client[int(r.client_id)]
            row["identified"] = int(row.get("identified", 0)) + int(hit)
    genders = np.array([truth.clients[int(r.client_id)].gender for r in recs], dtype=object)
    if public is not None and all(g is not None for g in genders):
        gender = _gender_metric(recs, recovered, genders, public, truth, seed, per_client)
        if gender is not None:
            out.append(gender[0])
            raw["gender"] = gender[1]
    examples = _examples(recs, pairs, truth, per_client, [n for n in HEADLINE_FEATURES if n in names] or shown[:6])
    return out, feature_rows, examples, raw


def _unit_or_none(unit: str | None) -> str | None:
    """A unit to print: ``None`` for a dimensionless (``"1"``) or unknown (``"?"``) one."""
    return None if unit in (None, "1", "?") else unit


def _mean_vector(rec: Reconstruction, d: int) -> np.ndarray:
    x = np.asarray(rec.features, np.float64).reshape(-1, d)
    w = None if rec.feature_weights is None else np.abs(np.asarray(rec.feature_weights, np.float64).reshape(-1))
    if w is None or len(w) != len(x) or not np.isfinite(w).all() or w.sum() <= 0:
        return x.mean(axis=0)
    return (w[:, None] * x).sum(axis=0) / w.sum()


def _gender_metric(recs: Sequence[Reconstruction], recovered: Sequence[np.ndarray], genders: np.ndarray,
                   public: FeatureTable, truth: RunTruth, seed: int,
                   per_client: dict[int, dict[str, Any]]) -> tuple[Metric, dict[str, Any]] | None:
    """Gender of every recovered vector under a classifier fitted on public features normalised like the run's."""
    from fedaudit.attacks.reconstruct import scores as sc
    from fedaudit.data.normalize import normalize_features

    if public.n_features != truth.table.n_features:
        return None
    pub = normalize_features(public, method=truth.normalization, train_mask=np.ones(len(public), dtype=bool))
    classifier = sc.fit_gender_classifier(pub.x, pub.gender, seed=seed)
    x = np.concatenate(recovered)
    owners = np.concatenate([np.full(len(v), int(r.client_id)) for r, v in zip(recs, recovered, strict=True)])
    truth_g = np.concatenate([np.full(len(v), g, dtype=object) for g, v in zip(genders, recovered, strict=True)])
    score = sc.gender_score(x, truth_g.astype(str), classifier=classifier, client_id=owners)
    predicted = np.asarray(classifier.predict(x)) == truth_g.astype(str)
    for c, row in per_client.items():
        mine = owners == c
        row["gender_correct"] = float(predicted[mine].mean()) if mine.any() else None
    corpora = ", ".join(sorted(set(public.corpus.tolist())))
    return (Metric(name="gender", label=f"gender of reconstructions under a classifier fitted on {corpora} "
                                        "(per client)",
                   value=score.rate, ci_low=score.ci[0], ci_high=score.ci[1], chance=score.chance, unit="fraction",
                   n=score.n), {**score.to_dict(), "public_corpora": corpora})


def _examples(recs: Sequence[Reconstruction], pairs: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
              truth: RunTruth, per_client: Mapping[int, Mapping[str, Any]], features: Sequence[str]) -> dict[str, Any]:
    """True and reconstructed values (own units) of ``features`` for the best-recovered clients."""
    from fedaudit.attacks.reconstruct.scores import denormalize, feature_unit

    names = list(truth.feature_names)
    cols = [names.index(f) for f in features]
    ranked = sorted(per_client.values(), key=lambda r: -(r.get("mean_cosine") or -2.0))[:_PLOT_CLIENTS]
    clients = []
    for row in ranked:
        c = truth.clients[int(row["client_id"])]
        rec = [p[1] for p in pairs if int(recs[p[0]].client_id) == c.client_id]
        tru = [p[2] for p in pairs if int(recs[p[0]].client_id) == c.client_id]
        if not rec:
            continue
        rec_raw = denormalize(np.concatenate(rec), mean=c.mean, std=c.std)[:_PLOT_VECTORS, cols]
        tru_raw = denormalize(np.concatenate(tru), mean=c.mean, std=c.std)[:_PLOT_VECTORS, cols]
        clients.append({"client_id": c.client_id, "speaker_id": c.speaker_id, "true": tru_raw.tolist(),
                        "reconstructed": rec_raw.tolist()})

    def unit(name: str) -> str | None:
        try:
            return _unit_or_none(feature_unit(name))
        except InvalidParameterError:
            return None

    return {"features": list(features), "units": [unit(f) for f in features], "clients": clients}


def _score_labels(recs: Sequence[Reconstruction], truth: RunTruth, *, kinds: Mapping[int, str],
                  samples: Mapping[int, int], per_client: dict[int, dict[str, Any]],
                  n_classes: int) -> tuple[list[Metric], str, dict[str, Any]]:
    """Label counts against the true counts (exact) or the training-set proportions (a FedSGD batch)."""
    from fedaudit.attacks.reconstruct import scores as sc
    from fedaudit.attacks.reconstruct.labels import round_counts

    est, tru, how = [], [], []
    for r in recs:
        counts, kind = truth.label_truth(int(r.client_id), num_samples=samples[int(r.row)], kind=kinds[int(r.row)])
        est.append(np.asarray(r.label_counts, np.int64))
        tru.append(counts.astype(np.int64) if kind == "exact" else round_counts(counts, samples[int(r.row)]))
        how.append(kind)
    est_a, tru_a = np.stack(est), np.stack(tru)
    label_truth = how[0] if len(set(how)) == 1 else "mixed"
    out: list[Metric] = []
    raw: dict[str, Any] = {}
    exact = [i for i, k in enumerate(how) if k == "exact"]
    if exact:
        score = sc.count_score(est_a[exact], tru_a[exact])
        out.append(Metric(name="labels_exact", label="label counts recovered exactly (per update)",
                          value=score.exact_rate, ci_low=score.exact_ci[0], ci_high=score.exact_ci[1],
                          chance=score.baseline_exact_rate, unit="fraction", n=score.n_updates))
        out.append(Metric(name="labels_mae", label="label-count error per class and update (true counts)",
                          value=score.mae, ci_low=score.mae_ci[0], ci_high=score.mae_ci[1], chance=score.baseline_mae,
                          higher_is_better=False, unit="samples", n=score.n_updates))
        raw["labels_exact_truth"] = score.to_dict()
    approx = [i for i, k in enumerate(how) if k == "proportions"]
    if approx:
        score = sc.count_score(est_a[approx], tru_a[approx])
        out.append(Metric(name="labels_mae_proportions",
                          label="label-count error per class and update (against the training-set proportions)",
                          value=score.mae, ci_low=score.mae_ci[0], ci_high=score.mae_ci[1], chance=score.baseline_mae,
                          higher_is_better=False, unit="samples", n=score.n_updates))
        raw["labels_proportions_truth"] = score.to_dict()
    for r, e, t in zip(recs, est_a, tru_a, strict=True):
        row = per_client[int(r.client_id)]
        row.setdefault("_mae", []).append(float(np.abs(e - t).mean()))
    for row in per_client.values():
        if "_mae" in row:
            row["label_mae"] = float(np.mean(row.pop("_mae")))
    return out, label_truth, raw
