"""HDF5 recordings of client updates. Knows nothing about attacks."""

from fedaudit.record.recorder import Recorder
from fedaudit.record.run import record_run
from fedaudit.record.store import ClientRow, UpdateStore, UpdateWriter, library_versions

__all__ = ["ClientRow", "Recorder", "UpdateStore", "UpdateWriter", "library_versions", "record_run"]
