"""Errors and warnings raised by fedaudit.

Every error carries an ``exit_code`` so the command line needs no lookup table,
and subclasses the builtin that fits so callers may catch either one.
"""

from __future__ import annotations

__all__ = [
    "AudioFormatWarning",
    "CorpusError",
    "DamagedRecordingError",
    "DamagedRowsWarning",
    "FeatureError",
    "FedAuditError",
    "FedAuditWarning",
    "FormatVersionError",
    "IncompleteRecordingWarning",
    "InvalidParameterError",
    "OutputExistsError",
    "RecordingError",
    "SkippedAudioWarning",
]


class FedAuditError(Exception):
    """Base class of every error fedaudit raises on purpose."""

    exit_code = 1


class InvalidParameterError(FedAuditError, ValueError):
    """A parameter has a value outside its allowed range or set."""

    exit_code = 2


class OutputExistsError(FedAuditError, FileExistsError):
    """An output (recording, attack model, results folder) already exists and would be replaced.

    The library only says what exists; the command line adds how to replace it (``--force``).
    """

    exit_code = 2


class CorpusError(FedAuditError, ValueError):
    """A corpus is missing, unknown, or not in its published layout."""

    exit_code = 2


class FeatureError(FedAuditError, RuntimeError):
    """Feature extraction failed or produced unusable features."""

    exit_code = 1


class RecordingError(FedAuditError, OSError):
    """A recording cannot be written or read."""

    exit_code = 1


class FormatVersionError(RecordingError, ValueError):
    """A recording was written in a format version this fedaudit cannot read."""

    exit_code = 3


class DamagedRecordingError(RecordingError):
    """Part of a recording fails its checksum: the file was damaged after it was written."""

    exit_code = 4


class FedAuditWarning(UserWarning):
    """Base class of fedaudit's warnings."""


class SkippedAudioWarning(FedAuditWarning):
    """Some audio files were unreadable, empty or too short and were skipped."""


class IncompleteRecordingWarning(FedAuditWarning):
    """A recording was not closed cleanly; only its completed rounds are served."""


class DamagedRowsWarning(FedAuditWarning):
    """Update rows of a recording failed their checksums and are left out of what the store serves."""


class AudioFormatWarning(FedAuditWarning):
    """Audio files were mixed down to mono, or a corpus mixes sampling rates."""


class SkippedUpdateWarning(FedAuditWarning):
    """A recording session left an update out (non-finite values, a repeated client); it counts them."""


class UndeclaredMetricWarning(FedAuditWarning):
    """A round reported a metric the run did not declare at its start; the recording leaves it out."""
