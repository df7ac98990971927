"""Demo corpora synthesised with the espeak-ng formant synthesiser.

Two small, speaker- and sentence-disjoint corpora stand in for a private corpus
(the clients of a federated run) and a public shadow corpus (the attacker's
training data), so that the whole audit pipeline runs without licensed data.

The "emotions" are prosody presets (pitch level and range, speaking rate,
loudness) of a formant synthesiser. They are not acted emotional speech: they
let a classifier learn something emotion-like, nothing more.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape as xml_escape

import numpy as np

from fedaudit.data.table import CORPUS_COLUMNS, EMOTIONS, GENDERS, check_corpus_table
from fedaudit.exceptions import CorpusError, FeatureError, InvalidParameterError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CORPUS_SPECS",
    "CorpusSpec",
    "EMOTION_PRESETS",
    "MANIFEST_NAME",
    "ProsodyPreset",
    "SpeakerSpec",
    "read_manifest",
    "speakers_of",
    "synthesize_corpus",
]

logger = logging.getLogger(__name__)

#: File name of the corpus table written next to the synthesised audio.
MANIFEST_NAME = "manifest.csv"

_INSTALL_HINT = (
    "Install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` "
    "(macOS). The shipped demo features (fedaudit.data.load_demo) work without it."
)


@dataclass(frozen=True, kw_only=True)
class ProsodyPreset:
    """Prosody of one emotion, relative to a speaker's neutral voice.

    Parameters
    ----------
    pitch_pct
        Change of the pitch level in percent (SSML ``<prosody pitch>``).
    range_pct
        Pitch range in percent of the neutral range (``<prosody range>``).
    rate_pct
        Speaking rate in percent of the speaker's rate (``<prosody rate>``).
    volume_pct
        Loudness in percent of the neutral loudness (``<prosody volume>``).
    """

    pitch_pct: float
    range_pct: float
    rate_pct: float
    volume_pct: float


#: Prosody presets of the four emotions (see :data:`fedaudit.data.table.EMOTIONS`).
EMOTION_PRESETS: Mapping[str, ProsodyPreset] = MappingProxyType(
    {
        "neutral": ProsodyPreset(pitch_pct=0.0, range_pct=100.0, rate_pct=100.0, volume_pct=100.0),
        "happy": ProsodyPreset(pitch_pct=15.0, range_pct=180.0, rate_pct=112.0, volume_pct=120.0),
        "sad": ProsodyPreset(pitch_pct=-12.0, range_pct=40.0, rate_pct=78.0, volume_pct=70.0),
        "angry": ProsodyPreset(pitch_pct=5.0, range_pct=140.0, rate_pct=120.0, volume_pct=165.0),
    }
)

# Standard deviations of the per-utterance jitter: pitch in percentage points,
# range, rate and volume as relative factors.
_JITTER = MappingProxyType({"pitch_pct": 3.0, "range": 0.10, "rate": 0.04, "volume": 0.08})


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """What a demo corpus is made of.

    Parameters
    ----------
    name
        Registry key, also the value of the ``corpus`` column.
    prefix
        Prefix of speaker ids (``"dp"`` gives ``dp_F01``).
    voices
        espeak-ng language voices (accents).
    female_variants, male_variants
        espeak-ng voice variants (``!v`` files) used for each gender; checked by
        measuring the mean F0 of their speech (see ``docs/demo-corpus.md``).
    sentences
        The sentences every speaker reads in every emotion.
    pitch_range, speed_range
        Ranges of a speaker's base pitch (``espeak-ng -p``, 0-99) and speed
        (``-s``, words per minute), drawn once per speaker.
    """

    name: str
    prefix: str
    voices: tuple[str, ...]
    female_variants: tuple[str, ...]
    male_variants: tuple[str, ...]
    sentences: tuple[str, ...]
    pitch_range: tuple[int, int] = (35, 65)
    speed_range: tuple[int, int] = (150, 195)
    default_speakers: int = 40


@dataclass(frozen=True, kw_only=True)
class SpeakerSpec:
    """Fixed characteristics of one synthetic speaker."""

    speaker_id: str
    gender: str
    voice: str
    variant: str
    pitch: int
    speed: int


#: The demo corpora by name. They share no voice, variant or sentence.
CORPUS_SPECS: Mapping[str, CorpusSpec] = MappingProxyType(
    {
        "demo-private": CorpusSpec(
            name="demo-private",
            prefix="dp",
            # "en" is British English; espeak-ng 1.51 ignores the variant of "en-gb+<variant>".
            voices=("en-us", "en"),
            female_variants=("f1", "f2", "f3", "Annie", "linda", "Andrea", "steph"),
            male_variants=(
                "m1", "m2", "m3", "m4", "Mike", "john", "max", "edward", "Gene", "norbert"
            ),  # fmt: skip
            sentences=(
                "The train to the city leaves at seven in the morning.",
                "I left my umbrella on the kitchen table.",
                "Nobody told me the meeting had been moved to Friday.",
                "We painted the fence green last summer.",
                "Please put the letters in the top drawer.",
                "The dog has been barking at the neighbours all day.",
                "She bought three tickets for the concert tonight.",
                "My brother is moving to a new flat next week.",
                "The coffee machine on the second floor is broken again.",
                "They found the keys under the front seat of the car.",
                "It is going to rain for the rest of the weekend.",
                "He forgot to send the report before lunch.",
            ),
        ),
        "demo-shadow": CorpusSpec(
            name="demo-shadow",
            prefix="ds",
            voices=("en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan"),
            female_variants=(
                "f4", "f5", "belinda", "aunty", "Alicia", "anika", "grandma", "shelby"
            ),  # fmt: skip
            male_variants=(
                "m5", "m6", "m7", "m8", "robert", "paul", "pedro", "michel", "quincy", "travis"
            ),  # fmt: skip
            sentences=(
                "The library closes early on public holidays.",
                "Our garden is full of tomatoes this year.",
                "The bus driver waited for the old man to sit down.",
                "I have never seen the sea so calm before.",
                "You should check the tyres before the long drive.",
                "The children built a castle out of cardboard boxes.",
                "A parcel arrived for you while you were out.",
                "We ran out of milk, so I made black tea.",
                "The football match was cancelled because of the snow.",
                "Her phone battery died in the middle of the call.",
                "The shop on the corner sells fresh bread every morning.",
                "He finally fixed the squeaky wheel on his bicycle.",
            ),
        ),
    }
)


def _spec(name: str) -> CorpusSpec:
    try:
        return CORPUS_SPECS[name]
    except KeyError:
        raise CorpusError(
            f"Unknown demo corpus {name!r}. Choose one of {sorted(CORPUS_SPECS)}."
        ) from None


def _rng(name: str, seed: int, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidParameterError(
            f"The 'seed' parameter of synthesize_corpus must be an int >= 0. Got {seed!r} instead."
        )
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), stream])


def speakers_of(name: str, *, seed: int = 0, n_speakers: int | None = None) -> list[SpeakerSpec]:
    """The speakers of a demo corpus: half female, half male.

    The k-th speaker of a gender takes the k-th variant of that gender, and the
    voices rotate so that the first ``len(variants) * len(voices)`` speakers of a
    gender are distinct (variant, voice) pairs. Base pitch and speed are drawn
    from a generator seeded by ``seed`` and the corpus name.

    Parameters
    ----------
    name
        A key of :data:`CORPUS_SPECS`.
    seed
        Seed of the speakers' base pitch and speed.
    n_speakers
        Even number of speakers, at least 2; ``None`` for the corpus default (40).

    Returns
    -------
    list of SpeakerSpec
        Female speakers first, then male ones.

    Raises
    ------
    CorpusError
        If ``name`` is not a demo corpus.
    InvalidParameterError
        If ``n_speakers`` is not an even number >= 2.
    """
    spec = _spec(name)
    n = spec.default_speakers if n_speakers is None else n_speakers
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2 or n % 2:
        raise InvalidParameterError(
            "The 'n_speakers' parameter of synthesize_corpus must be an even int >= 2 "
            f"(half female, half male). Got {n_speakers!r} instead."
        )
    rng = _rng(name, seed, 0)
    speakers: list[SpeakerSpec] = []
    for gender, variants in zip(GENDERS, (spec.female_variants, spec.male_variants), strict=True):
        pairs = [
            (variant, spec.voices[(i + r) % len(spec.voices)])
            for r in range(len(spec.voices))
            for i, variant in enumerate(variants)
        ]
        for k in range(n // 2):
            variant, voice = pairs[k % len(pairs)]
            speakers.append(
                SpeakerSpec(
                    speaker_id=f"{spec.prefix}_{gender}{k + 1:02d}",
                    gender=gender,
                    voice=voice,
                    variant=variant,
                    pitch=int(rng.integers(spec.pitch_range[0], spec.pitch_range[1] + 1)),
                    speed=int(rng.integers(spec.speed_range[0], spec.speed_range[1] + 1)),
                )
            )
    return speakers


def _ssml(text: str, preset: ProsodyPreset, rng: np.random.Generator) -> str:
    pitch = preset.pitch_pct + rng.normal(0.0, _JITTER["pitch_pct"])
    rng_range = preset.range_pct * max(0.2, 1.0 + rng.normal(0.0, _JITTER["range"]))
    rate = preset.rate_pct * max(0.5, 1.0 + rng.normal(0.0, _JITTER["rate"]))
    volume = preset.volume_pct * max(0.3, 1.0 + rng.normal(0.0, _JITTER["volume"]))
    return (
        f'<speak><prosody pitch="{pitch:+.1f}%" range="{rng_range:.0f}%" '
        f'rate="{rate:.0f}%" volume="{volume:.0f}%">{xml_escape(text)}</prosody></speak>'
    )


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FeatureError(
            "Synthesising a demo corpus needs the espeak-ng program, which is not on PATH. "
            + _INSTALL_HINT
        )
    return exe


def _run_espeak(exe: str, speaker: SpeakerSpec, ssml: str, out: Path) -> None:
    cmd = [
        exe, "-m", "-v", f"{speaker.voice}+{speaker.variant}",
        "-p", str(speaker.pitch), "-s", str(speaker.speed), "-w", str(out), ssml,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
        raise FeatureError(
            f"espeak-ng failed to synthesise {out.name} (voice {speaker.voice}+{speaker.variant}, "
            f"exit code {proc.returncode}): {proc.stderr.strip() or 'no output'}. "
            "Check that the espeak-ng data files include this voice and variant "
            "(`espeak-ng --voices=en`)."
        )


def synthesize_corpus(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_speakers: int | None = None,
    n_jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Synthesise a demo corpus with espeak-ng.

    Every speaker reads every sentence of the corpus in each of the four
    emotions, so the default corpus has 40 x 12 x 4 = 1920 WAV files (22.05 kHz,
    mono, 16 bit). The emotions are prosody presets (:data:`EMOTION_PRESETS`)
    with a small random jitter per utterance, not acted speech. The same seed
    gives the same files.

    Parameters
    ----------
    name
        ``"demo-private"`` or ``"demo-shadow"`` (keys of :data:`CORPUS_SPECS`).
    out_dir
        Folder to write ``wav/<speaker_id>/<utterance_id>.wav`` and
        ``manifest.csv`` into; created if needed. Existing files are overwritten.
    seed
        Seed of the speakers' characteristics and the prosody jitter.
    n_speakers
        Even number of speakers (half female); ``None`` for 40.
    n_jobs
        Number of espeak-ng processes run at once; ``None`` for the CPU count.
    progress
        Called as ``progress(done, total)`` each time a file is written.

    Returns
    -------
    pandas.DataFrame
        The corpus table (columns :data:`~fedaudit.data.table.CORPUS_COLUMNS`)
        with absolute paths. ``manifest.csv`` holds the same table with paths
        relative to ``out_dir``.

    Raises
    ------
    CorpusError
        If ``name`` is not a demo corpus.
    InvalidParameterError
        If ``n_speakers`` or ``n_jobs`` is invalid.
    FeatureError
        If espeak-ng is not installed or fails.

    Examples
    --------
    >>> table = synthesize_corpus("demo-shadow", "demo-out/shadow", n_speakers=2)  # doctest: +SKIP
    >>> len(table)  # doctest: +SKIP
    96
    """
    import pandas as pd

    spec = _spec(name)
    speakers = speakers_of(name, seed=seed, n_speakers=n_speakers)
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1
    ):
        raise InvalidParameterError(
            "The 'n_jobs' parameter of synthesize_corpus must be an int >= 1 or None. "
            f"Got {n_jobs!r} instead."
        )
    exe = _espeak()
    out = Path(out_dir).resolve()
    rng = _rng(name, seed, 1)
    rows: list[dict[str, str]] = []
    jobs: list[tuple[SpeakerSpec, str, Path]] = []
    for speaker in speakers:
        (out / "wav" / speaker.speaker_id).mkdir(parents=True, exist_ok=True)
        for s_idx, sentence in enumerate(spec.sentences):
            for emotion in EMOTIONS:
                ssml = _ssml(sentence, EMOTION_PRESETS[emotion], rng)
                utt = f"{speaker.speaker_id}_s{s_idx + 1:02d}_{emotion}"
                rel = Path("wav") / speaker.speaker_id / f"{utt}.wav"
                jobs.append((speaker, ssml, out / rel))
                rows.append(
                    dict(
                        utterance_id=utt,
                        path=rel.as_posix(),
                        speaker_id=speaker.speaker_id,
                        gender=speaker.gender,
                        emotion=emotion,
                        corpus=spec.name,
                    )
                )
    total = len(jobs)
    workers = n_jobs if n_jobs is not None else (os.cpu_count() or 2)
    logger.info("synthesising %d files of %s with %d espeak-ng processes", total, name, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run_espeak, exe, *job) for job in jobs]
        try:
            for done, fut in enumerate(as_completed(futures), start=1):
                fut.result()
                if progress is not None:
                    progress(done, total)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    manifest = pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".manifest-", suffix=".csv")
    os.close(fd)
    try:
        manifest.to_csv(tmp, index=False)
        os.replace(tmp, out / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    table = manifest.copy()
    table["path"] = [str(out / p) for p in manifest["path"]]
    return table


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a corpus table from a ``manifest.csv`` or the folder holding one.

    Relative paths in the manifest are resolved against the manifest's folder.

    Parameters
    ----------
    path
        A manifest CSV file with the columns
        :data:`~fedaudit.data.table.CORPUS_COLUMNS`, or a folder containing
        ``manifest.csv`` (as written by :func:`synthesize_corpus`).

    Returns
    -------
    pandas.DataFrame
        The corpus table with absolute paths, all columns as strings.

    Raises
    ------
    CorpusError
        If the manifest is missing or lacks columns or has bad gender codes.
    """
    import pandas as pd

    p = Path(path)
    manifest = p / MANIFEST_NAME if p.is_dir() else p
    if not manifest.is_file():
        raise CorpusError(
            f"No corpus manifest at {manifest}. Pass a manifest CSV with the columns "
            f"{list(CORPUS_COLUMNS)} or a folder written by `fedaudit corpus synth`."
        )
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    check_corpus_table(table, name=str(manifest))
    base = manifest.resolve().parent
    table["path"] = [str(q if (q := Path(s)).is_absolute() else base / q) for s in table["path"]]
    return table

