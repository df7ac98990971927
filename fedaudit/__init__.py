"""fedaudit: measure what a federated learning run leaks about its clients.

The public API, by stage of an audit::

    from fedaudit import FLConfig, load_demo, record_run, UpdateStore, StatsAttack, attack_success

    table = load_demo("demo-private")
    record_run(FLConfig(algorithm="fedsgd", rounds=200, seed=0), table, "recorded_updates/demo.h5")
"""

from fedaudit._version import __version__
from fedaudit.attacks import ATTACKS, Attack, InversionAttack, StatsAttack, load_attack
from fedaudit.config import FLConfig
from fedaudit.data import FeatureTable, extract_features, load_corpus, load_demo, load_features
from fedaudit.exceptions import FedAuditError, FedAuditWarning
from fedaudit.fl import simulate
from fedaudit.metrics import AttackResult, attack_success
from fedaudit.record import Recorder, UpdateStore, record_run
from fedaudit.shadow import run_shadow

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "FLConfig",
    "FeatureTable",
    "FedAuditError",
    "FedAuditWarning",
    "InversionAttack",
    "Recorder",
    "StatsAttack",
    "UpdateStore",
    "__version__",
    "attack_success",
    "extract_features",
    "load_attack",
    "load_corpus",
    "load_demo",
    "load_features",
    "record_run",
    "run_shadow",
    "simulate",
]
