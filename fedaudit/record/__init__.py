"""HDF5 recordings of client updates: format, writer, reader and the recorder hook.

Depends only on the ground floor and :mod:`fedaudit.hooks`: any federated loop
(fedaudit's simulator, a plain PyTorch loop, Flower) feeds it the same way.
"""

from fedaudit.record._h5 import library_versions
from fedaudit.record.reader import UpdateStore, Verification, verify_recording
from fedaudit.record.recorder import Recorder
from fedaudit.record.session import RecordingSession
from fedaudit.record.writer import UpdateWriter

__all__ = [
    "Recorder",
    "RecordingSession",
    "UpdateStore",
    "UpdateWriter",
    "Verification",
    "library_versions",
    "verify_recording",
]
