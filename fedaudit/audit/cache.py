"""Content-addressed results: every recording, shadow run and attack result is keyed by the hash of its inputs.

An interrupted audit resumes: a finished entry (its summary written last, atomically)
is never recomputed, and changing one setting changes the keys of exactly what
depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedaudit._version import __version__

__all__ = ["ResultCache", "content_key"]


def content_key(spec: Mapping[str, Any]) -> str:
    """A short SHA-256 of a JSON-ready specification (keys sorted) and the fedaudit version."""
    body = json.dumps({"spec": spec, "fedaudit": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:20]


class ResultCache:
    """A folder of entries ``<kind>/<key>.json`` (the summary) and, for recordings, ``<key>.h5``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The finished entry, or ``None`` (an entry whose summary is missing or unreadable is unfinished)."""
        summary = self.path(kind, key, ".json")
        try:
            return json.loads(summary.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def put(self, kind: str, key: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Write the summary last and atomically: it is what marks an entry finished."""
        summary = self.path(kind, key, ".json")
        summary.parent.mkdir(parents=True, exist_ok=True)
        tmp = summary.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(dict(value), indent=2, sort_keys=True, default=str))
        os.replace(tmp, summary)
        return dict(value)
