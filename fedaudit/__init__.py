"""fedaudit: measure what a federated learning run leaks about its clients.

The public API, by stage of an audit::

    from fedaudit import FLConfig, load_demo, record_run, UpdateStore, StatsAttack, attack_success

    table = load_demo("demo-private")
    record_run(FLConfig(algorithm="fedsgd", rounds=200, seed=0), table, "recorded_updates/demo.h5")

Names are imported on first use, so ``import fedaudit`` (and the command line's
``--help``) does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedaudit._lazy import lazy_names
from fedaudit._version import __version__

#: Public name -> module that defines it.
_LAZY: dict[str, str] = {
    "ATTACKS": "fedaudit.attacks",
    "Attack": "fedaudit.attacks",
    "AttackResult": "fedaudit.metrics",
    "DEFENSES": "fedaudit.defenses",
    "FLConfig": "fedaudit.config",
    "FeatureTable": "fedaudit.data",
    "FedAuditError": "fedaudit.exceptions",
    "FedAuditWarning": "fedaudit.exceptions",
    "InversionAttack": "fedaudit.attacks",
    "Recorder": "fedaudit.record",
    "StatsAttack": "fedaudit.attacks",
    "UpdateStore": "fedaudit.record",
    "attack_success": "fedaudit.metrics",
    "extract_features": "fedaudit.data",
    "load_attack": "fedaudit.attacks",
    "load_corpus": "fedaudit.data",
    "load_demo": "fedaudit.data",
    "load_features": "fedaudit.data",
    "record_run": "fedaudit.audit",
    "run_shadow": "fedaudit.audit",
    "simulate": "fedaudit.fl",
}

__all__ = sorted([*_LAZY, "__version__"])


__getattr__, __dir__ = lazy_names("fedaudit", _LAZY, globals())


if TYPE_CHECKING:
    from fedaudit.attacks import ATTACKS, Attack, InversionAttack, StatsAttack, load_attack
    from fedaudit.audit import record_run, run_shadow
    from fedaudit.config import FLConfig
    from fedaudit.data import FeatureTable, extract_features, load_corpus, load_demo, load_features
    from fedaudit.defenses import DEFENSES
    from fedaudit.exceptions import FedAuditError, FedAuditWarning
    from fedaudit.fl import simulate
    from fedaudit.metrics import AttackResult, attack_success
    from fedaudit.record import Recorder, UpdateStore
