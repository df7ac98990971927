"""Machine settings read from the environment at the command-line edge only."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Where fedaudit finds corpora and keeps caches (``FEDAUDIT_*`` variables)."""

    model_config = SettingsConfigDict(env_prefix="FEDAUDIT_")

    cache_dir: Path = Path.home() / ".cache" / "fedaudit"
    recordings_dir: Path = Path("recorded_updates")
    models_dir: Path = Path("attack_models")
    n_jobs: int = 2
