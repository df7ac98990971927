"""Scores of reconstructions against the truth, in a reviewer's units.

Pure functions of arrays (numpy, scipy, scikit-learn; no I/O). Every score comes
with its uncertainty and its chance level:

* :func:`match_score`: cosine similarity and normalised MSE between each
  recovered vector and the true utterance it is matched to (Hungarian matching
  on cosine, :func:`match_vectors`), against the same matching to utterances of
  other clients and to the corpus mean;
* :func:`feature_errors`: absolute errors of named features in the feature's own
  unit (de-normalised with the run's normalisation statistics), median and 90th
  percentile, ranked by the error relative to the feature's spread across
  speakers; :func:`feature_unit` and :data:`UNITS` say what openSMILE measures;
* :func:`identification_score`: nearest speaker centroid, chance ``1 / n_speakers``;
* :func:`gender_score`: gender of the reconstructions under a public classifier
  (:func:`fit_gender_classifier`), chance 0.5;
* :func:`count_score`: label-count recovery (exact histograms, mean absolute count error).

Rates carry a Wilson interval (:func:`wilson_interval`) and a one-sided binomial
p-value against chance; means carry a normal 95% interval over updates (an
update's vectors are not independent, so the update is the unit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import binomtest, norm

from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "CountScore",
    "FeatureError",
    "FeatureErrors",
    "Match",
    "MatchScore",
    "RateScore",
    "UNITS",
    "count_score",
    "denormalize",
    "feature_errors",
    "feature_unit",
    "fit_gender_classifier",
    "gender_score",
    "identification_score",
    "match_score",
    "match_vectors",
    "normalization_stats",
    "speaker_centroids",
    "speaker_spread",
    "wilson_interval",
]

_EPS = 1e-8  # as fedaudit.data.normalize: a constant feature keeps scale 1

#: Units of the Emo-Base low-level descriptors (openSMILE ``emobase.conf``), by LLD name prefix:
#: ``(pattern, unit, what openSMILE computes)``. Functionals change the unit (:func:`feature_unit`).
UNITS: tuple[tuple[str, str, str], ...] = (
    ("F0env", "Hz", "envelope of the F0 contour (cPitchACF, F0env), holds the last voiced value"),
    ("F0", "Hz", "fundamental frequency (cPitchACF, autocorrelation and cepstrum); 0 in unvoiced frames"),
    ("pcm_intensity", "FS^2",
     "intensity: mean of the squared, Hamming-weighted samples of a 25 ms frame, samples in [-1, 1] "
     "(full scale FS = 1); a power ratio to full scale, not dB"),
    ("pcm_loudness", "1",
     "loudness approximation (I / I0)^0.3 with I0 = 1e-6 (cIntensity); dimensionless, neither sone nor dB"),
    ("pcm_zcr", "1/sample", "zero crossings of a 25 ms frame divided by its length in samples (cMZcr)"),
    ("voiceProb", "1", "voicing probability from the autocorrelation (cPitchACF), 0 to 1"),
    ("mfcc", "1", "mel-frequency cepstral coefficient 1-12 of the log mel power spectrum (HTK-compatible)"),
    ("lspFreq", "rad/sample", "line spectral pair frequency from 8th-order LPC (cLsp), 0 to pi"),
)

#: Contours are smoothed over 3 frames and sampled every 10 ms; deltas use a window of 2 frames.
_FRAME = "frame"


def feature_unit(name: str) -> str:
    """The unit of an Emo-Base feature (``"F0_sma_amean"`` -> ``"Hz"``), functional included.

    ``maxPos``/``minPos`` are frame indices (10 ms steps; ``Extremes.norm = frame``), skewness and
    kurtosis are dimensionless, the linear-regression slope ``linregc1`` is per frame, the
    quadratic error ``linregerrQ`` is squared, and a delta (``_de``) is per frame.

    Raises
    ------
    InvalidParameterError
        If the name is not of an Emo-Base low-level descriptor of :data:`UNITS`.
    """
    lld = name.split("_sma", 1)[0]
    base = next((unit for pattern, unit, _ in UNITS if lld == pattern or lld.startswith(pattern + "[")), None)
    if base is None:
        base = next((unit for pattern, unit, _ in UNITS if lld.startswith(pattern)), None)
    if base is None:
        raise InvalidParameterError(
            f"No unit is known for the feature {name!r}; units are listed for the Emo-Base descriptors "
            f"{[p for p, _, _ in UNITS]}."
        )
    functional = name.rsplit("_", 1)[-1]
    delta = "_sma_de" in name
    if functional in ("maxPos", "minPos"):
        return _FRAME
    if functional in ("skewness", "kurtosis"):
        return "1"
    unit = base if not delta else _per_frame(base)
    if functional == "linregc1":
        return _per_frame(unit)
    if functional == "linregerrQ":
        return "1" if unit == "1" else f"({unit})^2"
    return unit


def _per_frame(unit: str) -> str:
    if unit == "1":
        return "1/frame"
    return unit[: -len("/frame")] + "/frame^2" if unit.endswith("/frame") else f"{unit}/frame"


# -- intervals -----------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate.

    Examples
    --------
    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.49, 0.943)
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise InvalidParameterError(f"wilson_interval needs 0 <= successes <= n; got {successes} of {n}.")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        m = float(values.mean()) if values.size else float("nan")
        return (m, m)
    half = 1.959964 * float(values.std(ddof=1)) / math.sqrt(values.size)
    return (float(values.mean()) - half, float(values.mean()) + half)


def _to_dict(obj: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in asdict(obj).items()}


# -- matching recovered vectors to true utterances ---------------------------------------------------------------


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


@dataclass(frozen=True, kw_only=True, eq=False)
class Match:
    """Recovered vectors matched one-to-one to true vectors (Hungarian, maximal total cosine).

    Parameters
    ----------
    rows, cols
        Index of each matched recovered vector and of its true vector (``min(k, n)`` pairs).
    cosine
        Cosine similarity of each pair.
    nmse
        Normalised squared error of each pair, ``|x_hat - x|^2 / |x|^2``.
    """

    rows: np.ndarray
    cols: np.ndarray
    cosine: np.ndarray
    nmse: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def _check_2d(name: str, x: np.ndarray, width: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or (width is not None and x.shape[1] != width):
        want = f"(n, {width})" if width is not None else "(n, d)"
        raise InvalidParameterError(f"The {name!r} vectors must have shape {want}; got {x.shape}.")
    return x


def match_vectors(recovered: np.ndarray, true: np.ndarray) -> Match:
    """Match recovered vectors ``(k, d)`` to true vectors ``(n, d)`` by the Hungarian method on cosine.

    Examples
    --------
    >>> m = match_vectors(np.array([[0.0, 2.0], [1.0, 0.1]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> m.cols.tolist(), bool(np.all(m.cosine > 0.99))
    ([1, 0], True)
    """
    true = _check_2d("true", true)
    recovered = _check_2d("recovered", recovered, true.shape[1])
    if not len(recovered) or not len(true):
        empty = np.zeros(0)
        return Match(rows=empty.astype(int), cols=empty.astype(int), cosine=empty, nmse=empty)
    cos = _unit_rows(recovered) @ _unit_rows(true).T
    rows, cols = linear_sum_assignment(-cos)
    diff = recovered[rows] - true[cols]
    nmse = np.einsum("ij,ij->i", diff, diff) / np.maximum(np.einsum("ij,ij->i", true[cols], true[cols]), 1e-300)
    return Match(rows=rows, cols=cols, cosine=cos[rows, cols], nmse=nmse)


@dataclass(frozen=True, kw_only=True)
class MatchScore:
    """How close reconstructions come to the client's true utterances, and to chance.

    Means are over updates (each update's mean over its matched pairs), with a normal 95%
    interval over updates. ``share_above`` is the share of matched pairs with cosine above
    ``threshold`` (Wilson interval over pairs).
    """

    n_updates: int
    n_pairs: int
    mean_cosine: float
    cosine_ci: tuple[float, float]
    median_cosine: float
    mean_nmse: float
    nmse_ci: tuple[float, float]
    threshold: float
    share_above: float
    share_above_ci: tuple[float, float]
    chance_cosine: float | None = None
    chance_cosine_ci: tuple[float, float] | None = None
    chance_nmse: float | None = None
    chance_share_above: float | None = None
    corpus_mean_cosine: float | None = None
    corpus_mean_nmse: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def match_score(
    recovered: Sequence[np.ndarray],
    true: Sequence[np.ndarray],
    *,
    others: Sequence[np.ndarray] | None = None,
    corpus_mean: np.ndarray | None = None,
    threshold: float = 0.99,
    seed: int = 0,
) -> MatchScore:
    """Cosine and normalised MSE of reconstructions matched to the client's utterances, with chance levels.

    Parameters
    ----------
    recovered
        One array ``(k_i, d)`` per update: the recovered vectors.
    true
        One array ``(n_i, d)`` per update: the client's true utterances (the candidates to match).
    others
        One array per update of utterances of *other* clients: the chance level draws
        ``n_i`` of them (without replacement when there are enough) and matches the
        recovered vectors to those in the same way.
    corpus_mean
        The corpus mean ``(d,)`` in the same space, scored as if it were every reconstruction
        (in a standardised space it is near 0: cosine undefined, NMSE 1).
    threshold
        Cosine counted as a recovery (``share_above``).
    seed
        Seed of the chance draws.
    """
    if len(recovered) != len(true):
        raise InvalidParameterError(
            f"match_score needs one true set per recovered set; got {len(recovered)} and {len(true)}."
        )
    if others is not None and len(others) != len(true):
        raise InvalidParameterError(
            f"match_score needs one pool of other clients' utterances per update ({len(true)}); got {len(others)}."
        )
    if not recovered:
        raise InvalidParameterError("match_score needs at least one update.")
    rng = np.random.default_rng(seed)
    per_cos, per_nmse, all_cos = [], [], []
    ch_cos, ch_nmse, ch_all = [], [], []
    cm_cos, cm_nmse = [], []
    for i, (rec, tru) in enumerate(zip(recovered, true, strict=True)):
        m = match_vectors(rec, tru)
        if not m.cosine.size:
            continue
        per_cos.append(m.cosine.mean())
        per_nmse.append(m.nmse.mean())
        all_cos.append(m.cosine)
        if others is not None:
            pool = _check_2d("others", others[i], np.shape(tru)[-1])
            take = min(len(pool), max(len(np.atleast_2d(tru)), 1))
            pick = pool[rng.choice(len(pool), size=take, replace=False)] if take else pool
            c = match_vectors(rec, pick)
            if c.cosine.size:
                ch_cos.append(c.cosine.mean())
                ch_nmse.append(c.nmse.mean())
                ch_all.append(c.cosine)
        if corpus_mean is not None:
            guess = np.repeat(np.asarray(corpus_mean, dtype=np.float64)[None], len(m.cols), axis=0)
            tt = _check_2d("true", tru)[m.cols]
            gn = np.linalg.norm(guess, axis=1) * np.linalg.norm(tt, axis=1)
            cm_cos.append(float(np.mean(np.einsum("ij,ij->i", guess, tt) / np.maximum(gn, 1e-300))))
            diff = guess - tt
            cm_nmse.append(float(np.mean(np.einsum("ij,ij->i", diff, diff) / np.einsum("ij,ij->i", tt, tt))))
    if not per_cos:
        raise InvalidParameterError("match_score found no pair to match (every recovered or true set is empty).")
    pairs = np.concatenate(all_cos)
    above = int((pairs > threshold).sum())
    out: dict[str, Any] = dict(
        n_updates=len(per_cos), n_pairs=int(pairs.size), mean_cosine=float(np.mean(per_cos)),
        cosine_ci=_mean_ci(np.array(per_cos)), median_cosine=float(np.median(pairs)),
        mean_nmse=float(np.mean(per_nmse)), nmse_ci=_mean_ci(np.array(per_nmse)), threshold=float(threshold),
        share_above=above / pairs.size, share_above_ci=wilson_interval(above, int(pairs.size)),
    )
    if ch_cos:
        cp = np.concatenate(ch_all)
        out.update(
            chance_cosine=float(np.mean(ch_cos)), chance_cosine_ci=_mean_ci(np.array(ch_cos)),
            chance_nmse=float(np.mean(ch_nmse)), chance_share_above=float((cp > threshold).mean()),
        )
    if cm_cos:
        out.update(corpus_mean_cosine=float(np.mean(cm_cos)), corpus_mean_nmse=float(np.mean(cm_nmse)))
    return MatchScore(**out)


# -- errors in the features' own units ---------------------------------------------------------------------------


def normalization_stats(
    x_raw: np.ndarray, speaker_id: Sequence[str] | np.ndarray, *, method: str, train_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and scale ``(n, d)`` that normalised each row, as :mod:`fedaudit.data.normalize` does.

    ``"global"``: the mean and standard deviation of the training rows (``train_mask``);
    ``"speaker"``: each speaker's own; ``"none"``: 0 and 1. A constant feature keeps scale 1.
    """
    x_raw = _check_2d("x_raw", x_raw)
    speaker_id = np.asarray(speaker_id)
    if len(speaker_id) != len(x_raw):
        raise InvalidParameterError(
            f"normalization_stats needs one speaker per row; got {len(speaker_id)} for {len(x_raw)} rows."
        )
    mean = np.zeros_like(x_raw)
    std = np.ones_like(x_raw)
    if method == "none":
        return mean, std
    if method == "global":
        if train_mask is None or not np.any(train_mask):
            raise InvalidParameterError("Global normalisation statistics need a non-empty mask of training rows.")
        xt = x_raw[np.asarray(train_mask, dtype=bool)]
        mean[:] = xt.mean(axis=0)
        sd = xt.std(axis=0)
        std[:] = np.where(sd > _EPS, sd, 1.0)
        return mean, std
    if method == "speaker":
        for spk in np.unique(speaker_id):
            rows = speaker_id == spk
            sd = x_raw[rows].std(axis=0)
            mean[rows] = x_raw[rows].mean(axis=0)
            std[rows] = np.where(sd > _EPS, sd, 1.0)
        return mean, std
    raise InvalidParameterError(f"Unknown normalisation {method!r}; choose one of ['none', 'global', 'speaker'].")


def denormalize(x: np.ndarray, *, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Back to the features' own units: ``x * std + mean`` (row-wise statistics or one row for all)."""
    return np.asarray(x, dtype=np.float64) * np.asarray(std) + np.asarray(mean)


def speaker_spread(x_raw: np.ndarray, speaker_id: Sequence[str] | np.ndarray) -> np.ndarray:
    """Spread of each feature across speakers: the standard deviation of the speaker means ``(d,)``."""
    x_raw = _check_2d("x_raw", x_raw)
    speaker_id = np.asarray(speaker_id)
    means = np.stack([x_raw[speaker_id == s].mean(axis=0) for s in np.unique(speaker_id)])
    return means.std(axis=0, ddof=1) if len(means) > 1 else np.zeros(x_raw.shape[1])


@dataclass(frozen=True, kw_only=True)
class FeatureError:
    """Absolute error of one feature over matched pairs, in the feature's unit."""

    name: str
    unit: str
    median: float
    p90: float
    spread: float
    relative: float  # median error over the spread across speakers (lower is recovered better)
    n: int

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass(frozen=True, kw_only=True)
class FeatureErrors:
    """Per-feature errors in the features' units, ranked (best recovered first) by relative error."""

    normalization: str
    n_pairs: int
    features: tuple[FeatureError, ...] = field(default_factory=tuple)

    def by_name(self, name: str) -> FeatureError:
        """The error of one named feature."""
        for f in self.features:
            if f.name == name:
                return f
        raise InvalidParameterError(f"No feature named {name!r} was scored.")

    def best(self, n: int = 10) -> tuple[FeatureError, ...]:
        """The ``n`` features recovered best relative to their spread across speakers."""
        return self.features[:n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "normalization": self.normalization, "n_pairs": self.n_pairs,
            "features": [f.to_dict() for f in self.features],
        }


def feature_errors(
    recovered: np.ndarray,
    true: np.ndarray,
    *,
    names: Sequence[str],
    std: np.ndarray,
    spread: np.ndarray,
    normalization: str = "global",
    units: Mapping[str, str] | None = None,
    select: Sequence[str] | None = None,
) -> FeatureErrors:
    """Absolute errors of matched pairs in each feature's own unit.

    Parameters
    ----------
    recovered, true
        Matched pairs ``(n, d)`` in the model's (normalised) input space.
    names
        Feature names, one per column.
    std
        The scale that normalised each true row, ``(d,)`` or ``(n, d)`` (per-speaker for
        ``"speaker"``; :func:`normalization_stats`). The mean cancels in an error.
    spread
        Each feature's spread across speakers in its unit ``(d,)`` (:func:`speaker_spread`).
    normalization
        Recorded with the result.
    units
        Unit by feature name; default :func:`feature_unit` (``"?"`` where none is known).
    select
        Score only these features (default: all).
    """
    recovered = _check_2d("recovered", recovered)
    true = _check_2d("true", true, recovered.shape[1])
    if len(true) != len(recovered):
        raise InvalidParameterError(f"feature_errors needs matched pairs; got {len(recovered)} and {len(true)} rows.")
    if len(names) != recovered.shape[1]:
        raise InvalidParameterError(
            f"feature_errors needs one name per column ({recovered.shape[1]}); got {len(names)}."
        )
    err = np.abs(recovered - true) * np.broadcast_to(np.asarray(std, dtype=np.float64), recovered.shape)
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float64), (recovered.shape[1],))
    wanted = range(len(names)) if select is None else [list(names).index(s) for s in select]
    out = []
    for j in wanted:
        name = str(names[j])
        if units is not None and name in units:
            unit = units[name]
        else:
            try:
                unit = feature_unit(name)
            except InvalidParameterError:
                unit = "?"
        med = float(np.median(err[:, j])) if len(err) else float("nan")
        rel = med / spread[j] if spread[j] > 0 else float("inf")
        out.append(FeatureError(
            name=name, unit=unit, median=med, p90=float(np.percentile(err[:, j], 90)) if len(err) else float("nan"),
            spread=float(spread[j]), relative=float(rel), n=int(len(err)),
        ))
    out.sort(key=lambda f: (f.relative, f.name))
    return FeatureErrors(normalization=normalization, n_pairs=int(len(recovered)), features=tuple(out))


# -- rates: identification, gender ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RateScore:
    """A success rate with its Wilson interval, its chance level and a one-sided binomial p-value."""

    name: str
    successes: int
    n: int
    rate: float
    ci: tuple[float, float]
    chance: float
    p_value: float
    unit: str = "reconstruction"

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def _rate(name: str, successes: int, n: int, chance: float, unit: str) -> RateScore:
    if n == 0:
        raise InvalidParameterError(f"The {name} rate needs at least one {unit}.")
    p = binomtest(int(successes), int(n), chance, alternative="greater").pvalue
    return RateScore(
        name=name, successes=int(successes), n=int(n), rate=successes / n, ci=wilson_interval(int(successes), int(n)),
        chance=float(chance), p_value=float(p), unit=unit,
    )


def speaker_centroids(x: np.ndarray, speaker_id: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Speaker ids (sorted) and the mean of each speaker's rows ``(n_speakers, d)``."""
    x = _check_2d("x", x)
    speaker_id = np.asarray(speaker_id)
    speakers = np.unique(speaker_id)
    return speakers, np.stack([x[speaker_id == s].mean(axis=0) for s in speakers])


def identification_score(
    recovered: np.ndarray, true_speaker: Sequence[str] | np.ndarray, *, speakers: Sequence[str] | np.ndarray,
    centroids: np.ndarray,
) -> RateScore:
    """Nearest-speaker identification: each reconstruction goes to the nearest centroid (Euclidean).

    Chance is ``1 / n_speakers``. Score in the space where speakers differ: under per-speaker
    normalisation every centroid is 0 in the model's input space, and the rate is at chance by
    construction.
    """
    recovered = _check_2d("recovered", recovered)
    centroids = _check_2d("centroids", centroids, recovered.shape[1])
    speakers = np.asarray(speakers)
    true_speaker = np.asarray(true_speaker)
    if len(true_speaker) != len(recovered) or len(speakers) != len(centroids):
        raise InvalidParameterError(
            "identification_score needs one true speaker per reconstruction and one id per centroid; "
            f"got {len(true_speaker)} for {len(recovered)} and {len(speakers)} for {len(centroids)}."
        )
    d2 = (
        np.einsum("ij,ij->i", recovered, recovered)[:, None] - 2 * recovered @ centroids.T
        + np.einsum("ij,ij->i", centroids, centroids)[None]
    )
    hit = speakers[np.argmin(d2, axis=1)] == true_speaker
    return _rate("identification", int(hit.sum()), len(hit), 1.0 / len(speakers), "reconstruction")


def fit_gender_classifier(x: np.ndarray, gender: Sequence[str] | np.ndarray, *, c: float = 1.0, seed: int = 0) -> Any:
    """A logistic regression of gender (``"F"``/``"M"``) on public features (scikit-learn, scaled inputs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _check_2d("x", x)
    gender = np.asarray(gender)
    if len(gender) != len(x) or len(set(gender.tolist())) != 2:
        raise InvalidParameterError(
            f"fit_gender_classifier needs one gender per row and both genders; got {sorted(set(gender.tolist()))}."
        )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    return model.fit(x, gender)


def gender_score(
    recovered: np.ndarray, true_gender: Sequence[str] | np.ndarray, *, classifier: Any,
    client_id: Sequence[int] | np.ndarray | None = None,
) -> RateScore:
    """Gender of reconstructions under a public classifier; chance 0.5.

    With ``client_id`` the rate is ASR-style: each client's share of correct
    reconstructions, averaged over clients, and the interval is over clients.
    """
    recovered = _check_2d("recovered", recovered)
    true_gender = np.asarray(true_gender)
    if len(true_gender) != len(recovered):
        raise InvalidParameterError(f"gender_score needs one true gender per reconstruction; got {len(true_gender)}.")
    ok = np.asarray(classifier.predict(recovered)) == true_gender
    if client_id is None:
        return _rate("gender", int(ok.sum()), len(ok), 0.5, "reconstruction")
    client_id = np.asarray(client_id)
    per_client = np.array([ok[client_id == c].mean() for c in np.unique(client_id)])
    n = len(per_client)
    successes = int(round(per_client.mean() * n))
    score = _rate("gender", successes, n, 0.5, "client")
    return RateScore(**{**asdict(score), "rate": float(per_client.mean())})


# -- label counts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CountScore:
    """Label-count recovery: exact histograms and mean absolute count error, with a baseline.

    The baseline guesses the even split of each update's sample count (largest remainder).
    """

    n_updates: int
    exact_rate: float
    exact_ci: tuple[float, float]
    mae: float
    mae_ci: tuple[float, float]
    baseline_exact_rate: float
    baseline_mae: float

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def _even_split(total: int, n_classes: int) -> np.ndarray:
    out = np.full(n_classes, total // n_classes)
    out[: total - out.sum()] += 1
    return out


def count_score(estimated: np.ndarray, true: np.ndarray) -> CountScore:
    """Exact-count rate and mean absolute count error (per class and update) of label-count estimates ``(n, C)``."""
    estimated = np.asarray(estimated)
    true = np.asarray(true)
    if estimated.shape != true.shape or estimated.ndim != 2 or not len(true):
        raise InvalidParameterError(
            f"count_score needs estimated and true counts of one shape (n_updates, n_classes); "
            f"got {estimated.shape} and {true.shape}."
        )
    exact = np.all(estimated == true, axis=1)
    per_update = np.abs(estimated - true).mean(axis=1)
    base = np.stack([_even_split(int(t.sum()), true.shape[1]) for t in true])
    return CountScore(
        n_updates=len(true), exact_rate=float(exact.mean()), exact_ci=wilson_interval(int(exact.sum()), len(true)),
        mae=float(per_update.mean()), mae_ci=_mean_ci(per_update),
        baseline_exact_rate=float(np.all(base == true, axis=1).mean()),
        baseline_mae=float(np.abs(base - true).mean()),
    )

