"""Acoustic features: utterance-level openSMILE functionals or MFCC statistics, and MFCC frame sequences.

:func:`extract_features` turns a corpus table (one row per audio file) into a
:class:`~fedaudit.data.table.FeatureTable`. Files are processed in parallel by a
process pool, in chunks, and each file's features are cached on disk so that a
second run over the same corpus extracts nothing.

Frame-level sets (``"mfcc-frames"``) give one vector per 20 ms frame. The cache
keeps each file's frames at their own length; the table pads or truncates them
to a fixed number of frames (a setting of the run) and flattens them frame-major,
so that ``x[i].reshape(frame_shape)`` is utterance ``i``'s frame matrix and
padding frames are all-zero vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import multiprocessing
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fedaudit.data.table import FeatureTable, check_corpus_table
from fedaudit.exceptions import AudioFormatWarning, FeatureError, InvalidParameterError, SkippedAudioWarning

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_FRAMES",
    "FEATURE_SETS",
    "FeatureSetInfo",
    "MIN_DURATION",
    "MIN_SAMPLING_RATE",
    "extract_features",
    "feature_names",
    "frame_feature_names",
    "pad_frames",
]

logger = logging.getLogger(__name__)

#: Audio shorter than this many seconds is skipped.
MIN_DURATION = 0.1
#: Files sampled below this rate (Hz) are skipped: speech features need the band up to 4 kHz.
MIN_SAMPLING_RATE = 8000
#: Skipped files named in the warning; the log lists all of them.
LISTED_SKIPPED = 5

# Bump when the features a set produces change, to invalidate old cache files.
_CACHE_VERSION = "1"

#: Frames per utterance of a frame-level table unless a run says otherwise: 300 frames
#: of 20 ms = 6 s, longer than most utterances of IEMOCAP and CREMA-D.
DEFAULT_FRAMES = 300


class _Extractor(Protocol):
    names: tuple[str, ...]
    version: str

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray: ...


@dataclass(frozen=True, kw_only=True)
class FeatureSetInfo:
    """A registered feature set.

    Parameters
    ----------
    n_features
        Number of features per utterance, or per frame for a frame-level set.
    description
        One line for ``--help`` texts and the docs.
    factory
        Builds the extractor; called once per worker process. Utterance-level
        extractors return a vector, frame-level ones a ``(n_frames, n_features)``
        matrix.
    frame_level
        Whether the set gives a sequence of frame vectors per utterance.
    """

    n_features: int
    description: str
    factory: Callable[[], _Extractor]
    frame_level: bool = False


# --------------------------------------------------------------------------- openSMILE


class _SmileExtractor:
    """Functionals of one openSMILE feature set, computed from a signal in memory."""

    def __init__(self, feature_set_name: str) -> None:
        try:
            import opensmile
        except ImportError as err:  # pragma: no cover - opensmile is a core dependency
            raise ImportError(
                f"The {feature_set_name!r} openSMILE features need the opensmile package: "
                "`pip install opensmile`, or use feature_set='mfcc', which does not."
            ) from err
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set_name],
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.names = tuple(self._smile.feature_names)
        self.version = f"opensmile-{opensmile.__version__}"

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        # openSMILE converts to int16 by scaling with 32768: keep 1.0 from wrapping round.
        clipped = np.clip(signal, -1.0, 32767.0 / 32768.0).astype(np.float32, copy=False)
        with warnings.catch_warnings():
            # "Segment too short, filling with NaN": NaN rows are skipped by the caller.
            warnings.simplefilter("ignore", UserWarning)
            # Smile.__call__ returns (channels, features, frames) without building a DataFrame,
            # which is faster than process_file/process_signal.
            y = self._smile(clipped[np.newaxis, :], sampling_rate)
        return np.asarray(y, dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------- MFCC

_MFCC_RATE = 16_000
_MFCC_FRAME = 400  # 25 ms at 16 kHz
_MFCC_HOP = 160  # 10 ms
_MFCC_NFFT = 512
_MFCC_MELS = 26
_MFCC_COEFS = 13
_MFCC_STATS = ("mean", "std", "min", "max")

# mfcc-frames: 20 ms frames with a 20 ms step, after level normalisation and light denoising.
_FRAMES_LEN = 320  # 20 ms at 16 kHz
_FRAMES_HOP = 320  # 20 ms
_FRAMES_RMS = 0.1  # target RMS level of a signal (-20 dBFS)
_FRAMES_NOISE_PERCENTILE = 10  # noise power per frequency bin: this percentile over the frames
_FRAMES_FLOOR = 0.01  # spectral floor: at least this share of a bin's power is kept (-20 dB)
_FRAMES_TRIM = 1e-6  # leading/trailing frames 60 dB below the loudest frame are trimmed


@lru_cache(maxsize=1)
def _mel_filterbank() -> np.ndarray:
    """Triangular mel filters, shape ``(n_mels, n_fft // 2 + 1)`` (HTK mel scale)."""

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges_hz = mel_to_hz(np.linspace(hz_to_mel(20.0), hz_to_mel(_MFCC_RATE / 2), _MFCC_MELS + 2))
    freqs = np.linspace(0.0, _MFCC_RATE / 2, _MFCC_NFFT // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def _deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over ``±width`` frames, edges repeated (HTK formula)."""
    padded = np.pad(c, ((width, width), (0, 0)), mode="edge")
    n = len(c)
    num = sum(
        k * (padded[width + k : width + k + n] - padded[width - k : width - k + n])
        for k in range(1, width + 1)
    )
    return num / (2.0 * sum(k * k for k in range(1, width + 1)))


def _at_16k(signal: np.ndarray, sampling_rate: int) -> np.ndarray:
    """The signal as float64 at 16 kHz (polyphase resampling)."""
    from scipy.signal import resample_poly

    x = np.asarray(signal, dtype=np.float64)
    if sampling_rate != _MFCC_RATE:
        g = math.gcd(int(sampling_rate), _MFCC_RATE)
        x = resample_poly(x, _MFCC_RATE // g, int(sampling_rate) // g)
    return x


def _power_spectra(x: np.ndarray, frame: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Pre-emphasis, Hamming-windowed frames, power spectra: shape ``(n_frames, n_fft // 2 + 1)``.

    A signal shorter than one frame is zero-padded to one frame; otherwise the
    frames are the ``1 + (len(x) - frame) // hop`` full frames.
    """
    x = np.append(x[:1], x[1:] - 0.97 * x[:-1])  # pre-emphasis
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    windows = np.lib.stride_tricks.sliding_window_view(x, frame)
    frames = windows[::hop] * window
    return np.abs(np.fft.rfft(frames, n=_MFCC_NFFT, axis=1)) ** 2 / _MFCC_NFFT


def _cepstra(power: np.ndarray) -> np.ndarray:
    """13 MFCCs per frame from power spectra (26 mel bands, log, orthonormal DCT-II)."""
    from scipy.fft import dct

    log_mel = np.log(power @ _mel_filterbank().T + 1e-10)
    return dct(log_mel, type=2, norm="ortho", axis=1)[:, :_MFCC_COEFS]


class _MfccExtractor:
    """13 MFCCs and their deltas (25 ms Hamming frames, 10 ms hop, 26 mel bands at 16 kHz),
    summarised by mean, standard deviation, minimum and maximum: 104 features."""

    version = "numpy-mfcc-1"

    def __init__(self) -> None:
        self.names = tuple(
            f"{kind}{i}_{stat}"
            for kind in ("mfcc", "delta_mfcc")
            for i in range(_MFCC_COEFS)
            for stat in _MFCC_STATS
        )
        self._window = np.hamming(_MFCC_FRAME)

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        x = _at_16k(signal, sampling_rate)
        mfcc = _cepstra(_power_spectra(x, _MFCC_FRAME, _MFCC_HOP, self._window))
        parts = []
        for c in (mfcc, _deltas(mfcc)):
            # (coef, stat) order, matching self.names
            parts.append(np.stack([c.mean(0), c.std(0), c.min(0), c.max(0)], axis=1).reshape(-1))
        return np.concatenate(parts)


class _MfccFramesExtractor:
    """13 MFCCs per 20 ms frame with a 20 ms step, on a level-normalised, lightly denoised signal.

    Steps, all at 16 kHz: the mean (DC) is removed and the signal scaled to an
    RMS of 0.1 (-20 dBFS), so that recording level does not reach the features;
    pre-emphasis (0.97); 20 ms Hamming frames with a 20 ms step; power spectra
    (512-point FFT); spectral subtraction with a floor: the noise power of each
    frequency bin is estimated as its 10th percentile over the utterance's
    frames, subtracted, and at least 1% (-20 dB) of each bin's power is kept;
    leading and trailing frames more than 60 dB below the loudest frame
    (digital silence) are trimmed; 26 mel bands, log, DCT-II, 13 coefficients.
    The result has one row per frame (shape ``(n_frames, 13)``): a second of
    steady sound at any sampling rate gives 50 frames.
    """

    version = "numpy-mfcc-frames-1"

    def __init__(self) -> None:
        self.names = tuple(f"mfcc{i}" for i in range(_MFCC_COEFS))
        self._window = np.hamming(_FRAMES_LEN)

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        x = _at_16k(signal, sampling_rate)
        x = x - x.mean()
        rms = float(np.sqrt(np.mean(x * x)))
        if not rms > 1e-8:
            raise ValueError("the signal is silent")
        x = x * (_FRAMES_RMS / rms)
        power = _power_spectra(x, _FRAMES_LEN, _FRAMES_HOP, self._window)
        noise = np.percentile(power, _FRAMES_NOISE_PERCENTILE, axis=0)
        power = np.maximum(power - noise, _FRAMES_FLOOR * power)
        energy = power.sum(axis=1)
        loud = np.flatnonzero(energy > _FRAMES_TRIM * energy.max())
        power = power[loud[0] : loud[-1] + 1]
        return _cepstra(power)


# --------------------------------------------------------------------------- registry

#: Feature sets by name. openSMILE sets are utterance-level functionals.
FEATURE_SETS: Mapping[str, FeatureSetInfo] = MappingProxyType(
    {
        "emobase": FeatureSetInfo(
            n_features=988,
            description="openSMILE Emo-Base functionals (988)",
            factory=lambda: _SmileExtractor("emobase"),
        ),
        "egemaps": FeatureSetInfo(
            n_features=88,
            description="openSMILE eGeMAPS v02 functionals (88)",
            factory=lambda: _SmileExtractor("eGeMAPSv02"),
        ),
        "compare": FeatureSetInfo(
            n_features=6373,
            description="openSMILE ComParE 2016 functionals (6373)",
            factory=lambda: _SmileExtractor("ComParE_2016"),
        ),
        "mfcc": FeatureSetInfo(
            n_features=len(_MFCC_STATS) * 2 * _MFCC_COEFS,
            description="13 MFCCs + deltas, mean/std/min/max (104); numpy only",
            factory=_MfccExtractor,
        ),
        "mfcc-frames": FeatureSetInfo(
            n_features=_MFCC_COEFS,
            description="13 MFCCs per 20 ms frame, 20 ms step, normalised and denoised signal; numpy only",
            factory=_MfccFramesExtractor,
            frame_level=True,
        ),
    }
)

# One extractor per feature set and process (workers build theirs on first use).
_EXTRACTORS: dict[str, _Extractor] = {}


def _extractor(feature_set: str) -> _Extractor:
    ext = _EXTRACTORS.get(feature_set)
    if ext is None:
        ext = _EXTRACTORS[feature_set] = FEATURE_SETS[feature_set].factory()
    return ext


def _check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise InvalidParameterError(
            "The 'feature_set' parameter of extract_features must be one of "
            f"{sorted(FEATURE_SETS)}. Got {feature_set!r} instead."
        )


def feature_names(feature_set: str) -> tuple[str, ...]:
    """Names of the features of a registered feature set, in column order (per frame for a frame-level set).

    Raises
    ------
    InvalidParameterError
        If ``feature_set`` is not a key of :data:`FEATURE_SETS`.
    """
    _check_feature_set(feature_set)
    return _extractor(feature_set).names


def frame_feature_names(names: Sequence[str], n_frames: int) -> tuple[str, ...]:
    """Column names of a flattened frame table: ``"t000_mfcc0"``, ... frame-major."""
    width = max(3, len(str(n_frames - 1)))
    return tuple(f"t{t:0{width}d}_{name}" for t in range(n_frames) for name in names)


def pad_frames(frames: Sequence[np.ndarray], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad with all-zero frames or truncate frame matrices to ``n_frames`` frames and flatten them.

    Parameters
    ----------
    frames
        One ``(length_i, C)`` matrix per utterance.
    n_frames
        Frames per utterance of the result; longer utterances keep their first
        ``n_frames`` frames.

    Returns
    -------
    x : numpy.ndarray
        float32, shape ``(n_utterances, n_frames * C)``, frame-major.
    lengths : numpy.ndarray
        int64, the valid frames of each row (``min(length_i, n_frames)``).

    Examples
    --------
    >>> x, lengths = pad_frames([np.ones((3, 2)), np.ones((1, 2))], 2)
    >>> x.tolist(), lengths.tolist()
    ([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]], [2, 1])
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int | np.integer) or n_frames < 1:
        raise InvalidParameterError(
            f"The 'n_frames' parameter of pad_frames must be an int >= 1. Got {n_frames!r} instead."
        )
    if not frames:
        raise InvalidParameterError("pad_frames got no frame matrices; pass one per utterance.")
    dims = {int(np.shape(f)[1]) for f in frames}
    if len(dims) != 1:
        raise InvalidParameterError(f"pad_frames got frame matrices of different widths {sorted(dims)}.")
    (dim,) = dims
    out = np.zeros((len(frames), int(n_frames), dim), dtype=np.float32)
    lengths = np.empty(len(frames), dtype=np.int64)
    for i, f in enumerate(frames):
        n = min(len(f), int(n_frames))
        out[i, :n] = f[:n]
        lengths[i] = n
    return out.reshape(len(frames), -1), lengths


# --------------------------------------------------------------------------- per-file work


def _read_mono(path: str) -> tuple[np.ndarray, int, int]:
    """Samples mixed down to mono (the mean of the channels), the sampling rate and the channel count."""
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return (data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]), int(rate), int(data.shape[1])


def _extract_one(feature_set: str, path: str) -> tuple[np.ndarray | None, str, int, int]:
    """Features of one file (or ``None`` and the reason to skip it), its channel count and sampling rate."""
    try:
        signal, rate, channels = _read_mono(path)
    except Exception as err:  # soundfile raises several types for unreadable files
        return None, f"unreadable ({type(err).__name__}: {err})", 0, 0
    if rate < MIN_SAMPLING_RATE:
        return None, f"sampled at {rate} Hz, below {MIN_SAMPLING_RATE} Hz", channels, rate
    if signal.size == 0:
        return None, "empty", channels, rate
    if signal.size < MIN_DURATION * rate:
        return None, f"too short ({signal.size / rate:.3f} s < {MIN_DURATION} s)", channels, rate
    try:
        x = _extractor(feature_set)(signal, rate)
    except Exception as err:  # an extractor error on one file must not stop a corpus
        return None, f"extraction failed ({type(err).__name__}: {err})", channels, rate
    if not np.all(np.isfinite(x)):
        return None, "non-finite features", channels, rate
    return x, "", channels, rate


def _extract_chunk(
    feature_set: str, items: Sequence[tuple[int, str]]
) -> list[tuple[int, np.ndarray | None, str, int, int]]:
    """Worker task: extract a chunk of ``(row, path)`` items."""
    return [(i, *_extract_one(feature_set, p)) for i, p in items]


def _format_note(channels: Mapping[int, int], rates: Mapping[int, int], ok: np.ndarray) -> str:
    """What was done to the kept files that are not mono at the common rate (files read in this call), or ``""``."""
    kept = [i for i in rates if ok[i]]
    if not kept:
        return ""
    mixed = sum(channels[i] > 1 for i in kept)
    counts: dict[int, int] = {}
    for i in kept:
        counts[rates[i]] = counts.get(rates[i], 0) + 1
    common = max(counts, key=lambda r: (counts[r], r))
    others = {r: n for r, n in sorted(counts.items()) if r != common}
    if not mixed and not others:
        return ""
    parts = []
    if mixed:
        parts.append(f"{mixed} had several channels and were mixed down to mono (the mean of the channels)")
    if others:
        listed = ", ".join(f"{n} at {r} Hz" for r, n in others.items())
        parts.append(f"{listed} (most are at {common} Hz; openSMILE features are computed at each file's own rate, "
                     "so resample the files to one rate for comparable features)")
    note = f"Of the {len(kept)} audio files read, " + "; ".join(parts) + "."
    logger.info("%s", note)
    return note


# --------------------------------------------------------------------------- cache

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _cache_file(root: Path, feature_set: str, version: str, corpus: str, path: str) -> Path | None:
    """Cache file of one audio file: keyed by corpus, path, size, mtime and feature set."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = "|".join(
        (
            _CACHE_VERSION,
            feature_set,
            version,
            corpus,
            os.path.abspath(path),
            str(st.st_size),
            str(st.st_mtime_ns),
        )
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:24]
    return root / feature_set / (_UNSAFE.sub("_", corpus) or "_") / f"{digest}.npy"


def _cache_read(file: Path, n_features: int, *, frame_level: bool = False) -> np.ndarray | None:
    """A cached vector of ``n_features`` (or ``(n_frames, n_features)`` frames), or ``None`` if unusable."""
    try:
        x = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if frame_level:
        shape_ok = x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] == n_features
    else:
        shape_ok = x.shape == (n_features,)
    return x if shape_ok and np.all(np.isfinite(x)) else None


def _cache_write(file: Path, x: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.asarray(x, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- driver


def _chunks(items: list[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run_parallel(
    feature_set: str, todo: list[tuple[int, str]], n_jobs: int
) -> Iterator[list[tuple[int, np.ndarray | None, str, int, int]]]:
    """Yield chunk results as they complete."""
    if n_jobs == 1 or len(todo) <= 1:
        for item in todo:
            yield _extract_chunk(feature_set, [item])
        return
    # About 8 tasks per worker (at most 16 files each): enough for load balancing and a
    # live progress bar, few enough to amortise the per-task overhead.
    size = max(1, min(16, math.ceil(len(todo) / (n_jobs * 8))))
    # fork: workers start in milliseconds with the modules (and the parent's extractor)
    # already imported, where forkserver and spawn take 2-3 s per call and fail for code
    # run from stdin. Workers only run numpy, soundfile and openSMILE.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    ctx = multiprocessing.get_context(method)
    workers = min(n_jobs, math.ceil(len(todo) / size))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = {pool.submit(_extract_chunk, feature_set, chunk) for chunk in _chunks(todo, size)}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except BrokenProcessPool as err:
            raise FeatureError(
                f"A {feature_set} feature worker process died ({err}). Files extracted so far "
                "are in the cache; rerun with n_jobs=1 to see the failing file's error."
            ) from err
        finally:
            for fut in pending:
                fut.cancel()


def extract_features(
    table: pd.DataFrame,
    *,
    feature_set: str = "emobase",
    cache_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 2,
    progress: Callable[[int, int], None] | None = None,
    n_frames: int | None = None,
) -> FeatureTable:
    """Extract one feature vector (or one sequence of frame vectors) per audio file of a corpus table.

    Audio is read with soundfile. Files with several channels are mixed down
    to mono (the mean of the channels). openSMILE sets are computed at each
    file's own sampling rate; ``"mfcc"`` resamples to 16 kHz. Files sampled
    below :data:`MIN_SAMPLING_RATE` Hz, unreadable, empty, shorter than
    :data:`MIN_DURATION` seconds or giving non-finite features are skipped and
    reported in one :class:`~fedaudit.exceptions.SkippedAudioWarning` (the first
    :data:`LISTED_SKIPPED` by name and the count; the log lists every one). The
    same warning (or, when no file was skipped, one
    :class:`~fedaudit.exceptions.AudioFormatWarning`) says how many files were
    mixed down, and which sampling rates other than the most common one occur
    (openSMILE features of different rates are not comparable).

    Parameters
    ----------
    table
        Corpus table with the columns :data:`~fedaudit.data.table.CORPUS_COLUMNS`.
    feature_set
        A key of :data:`FEATURE_SETS`: ``"emobase"`` (988), ``"egemaps"`` (88),
        ``"compare"`` (6373), ``"mfcc"`` (104, no openSMILE needed) or
        ``"mfcc-frames"`` (13 per 20 ms frame, see ``docs/features.md``).
    cache_dir
        Folder of the feature cache, or ``None`` for no cache. Each file's
        features go to ``<cache_dir>/<feature_set>/<corpus>/<hash>.npy``, keyed
        by corpus, absolute path, size and modification time, so an edited file
        is extracted again.
    n_jobs
        Number of worker processes; 1 extracts in this process.
    progress
        Called as ``progress(done, total)`` as files complete (cached files
        count as done at once).
    n_frames
        Frame-level sets only: frames per utterance of the table (default
        :data:`DEFAULT_FRAMES`); shorter utterances are padded with all-zero
        frames, longer ones truncated. The cache keeps every frame, so another
        ``n_frames`` extracts nothing again.

    Returns
    -------
    FeatureTable
        float32 features in the table's row order, without the skipped rows.
        A frame-level table has ``frame_shape = (n_frames, C)`` and the valid
        frames of each row in ``lengths``.

    Raises
    ------
    InvalidParameterError
        If ``feature_set`` is unknown, ``n_jobs`` < 1, or ``n_frames`` is
        given for an utterance-level set or is < 1.
    CorpusError
        If ``table`` lacks columns or has bad gender codes.
    FeatureError
        If the table is empty or no file gave features.

    Warns
    -----
    SkippedAudioWarning
        Once, if any file was skipped: how many, and the first few with their reasons.
    AudioFormatWarning
        Once, if no file was skipped but files were mixed down to mono or differ in sampling rate.

    Examples
    --------
    >>> from fedaudit.data.synth import read_manifest  # doctest: +SKIP
    >>> table = read_manifest("demo-out/private")  # doctest: +SKIP
    >>> feats = extract_features(table, cache_dir=".fedaudit-cache")  # doctest: +SKIP
    >>> feats.n_features  # doctest: +SKIP
    988
    """
    _check_feature_set(feature_set)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs < 1:
        raise InvalidParameterError(
            "The 'n_jobs' parameter of extract_features must be an int >= 1. "
            f"Got {n_jobs!r} instead."
        )
    info = FEATURE_SETS[feature_set]
    if n_frames is not None and not info.frame_level:
        raise InvalidParameterError(
            f"The 'n_frames' parameter of extract_features applies to frame-level feature sets "
            f"({sorted(k for k, v in FEATURE_SETS.items() if v.frame_level)}); {feature_set!r} gives one vector "
            "per utterance. Drop n_frames or choose a frame-level set."
        )
    if info.frame_level:
        n_frames = DEFAULT_FRAMES if n_frames is None else n_frames
        if isinstance(n_frames, bool) or not isinstance(n_frames, int | np.integer) or n_frames < 1:
            raise InvalidParameterError(
                f"The 'n_frames' parameter of extract_features must be an int >= 1. Got {n_frames!r} instead."
            )
    check_corpus_table(table, name="passed to extract_features")
    total = len(table)
    if total == 0:
        raise FeatureError(
            "The corpus table passed to extract_features has no rows. "
            "Pass a table with one row per audio file."
        )

    ext = _extractor(feature_set)
    n_features = len(ext.names)
    paths = [str(p) for p in table["path"]]
    corpora = [str(c) for c in table["corpus"]]
    values: list[np.ndarray | None] = [None] * total
    ok = np.zeros(total, dtype=bool)
    reasons: dict[int, str] = {}
    channels: dict[int, int] = {}
    rates: dict[int, int] = {}

    root = Path(cache_dir) if cache_dir is not None else None
    cache_files: list[Path | None] = [None] * total
    todo: list[tuple[int, str]] = []
    for i, path in enumerate(paths):
        if root is not None:
            cache_files[i] = _cache_file(root, feature_set, ext.version, corpora[i], path)
            file = cache_files[i]
            cached = _cache_read(file, n_features, frame_level=info.frame_level) if file is not None else None
            if cached is not None:
                values[i], ok[i] = cached.astype(np.float32, copy=False), True
                continue
        todo.append((i, path))
    done = total - len(todo)
    logger.info("%s: %d of %d files cached, extracting %d", feature_set, done, total, len(todo))
    if progress is not None and done:
        progress(done, total)

    for results in _run_parallel(feature_set, todo, n_jobs):
        for i, vec, reason, n_channels, rate in results:
            if rate:
                channels[i], rates[i] = n_channels, rate
            if vec is None:
                reasons[i] = reason
                continue
            values[i], ok[i] = np.asarray(vec, dtype=np.float32), True
            if cache_files[i] is not None:
                _cache_write(cache_files[i], values[i])
        done += len(results)
        if progress is not None:
            progress(done, total)

    if not ok.any():
        first = min(reasons)
        raise FeatureError(
            f"No features could be extracted from any of the {total} audio files "
            f"(first: {paths[first]}: {reasons[first]}). "
            f"Check the 'path' column points to readable audio of at least {MIN_DURATION} s."
        )
    note = _format_note(channels, rates, ok)
    if reasons:  # one warning in all: the skipped files, and what was done to the others
        for i in sorted(reasons):
            logger.warning("skipped %s: %s", paths[i], reasons[i])
        listed = "; ".join(f"{paths[i]}: {reasons[i]}" for i in sorted(reasons)[:LISTED_SKIPPED])
        more = len(reasons) - min(len(reasons), LISTED_SKIPPED)
        warnings.warn(
            SkippedAudioWarning(
                f"Skipped {len(reasons)} of {total} audio files ({listed}"
                + (f"; and {more} more, all listed in the log" if more else "")
                + "). Fix or remove these files from the corpus table to keep them."
                + (f" {note}" if note else "")
            ),
            stacklevel=2,
        )
    elif note:
        warnings.warn(AudioFormatWarning(note), stacklevel=2)

    def col(name: str) -> np.ndarray:
        return table[name].to_numpy().astype(str)[ok]

    kept = [v for v in values if v is not None]
    frame_shape: tuple[int, int] | None = None
    lengths: np.ndarray | None = None
    names = ext.names
    if info.frame_level:
        x, lengths = pad_frames(kept, int(n_frames))  # type: ignore[arg-type]
        frame_shape = (int(n_frames), n_features)  # type: ignore[arg-type]
        names = frame_feature_names(ext.names, int(n_frames))  # type: ignore[arg-type]
    else:
        x = np.stack(kept).astype(np.float32, copy=False)
    return FeatureTable(
        x=x,
        utterance_id=col("utterance_id"),
        speaker_id=col("speaker_id"),
        gender=col("gender"),
        emotion=col("emotion"),
        corpus=col("corpus"),
        feature_set=feature_set,
        feature_names=names,
        frame_shape=frame_shape,
        lengths=lengths,
    )
