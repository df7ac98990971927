"""Pipeline steps run from configuration: record a simulated run, shadow training, fit and score attacks,
and the audit grid that runs them all.

The command line calls these. This is the only layer that puts the simulator
(``fl/``), the recorder (``record/``), the defenses and the attacks together.
Names are imported on first use, so that the command line stays fast.
"""

from __future__ import annotations

from fedaudit._lazy import lazy_names

#: Public name -> module that defines it.
_NAMES: dict[str, str] = {
    "AttackReport": "fedaudit.audit.attack",
    "AuditConfig": "fedaudit.audit.grid",
    "DEFAULT_PUBLIC_CORPORA": "fedaudit.audit.attack",
    "Setting": "fedaudit.audit.grid",
    "attack_target": "fedaudit.audit.attack",
    "build_run_defenses": "fedaudit.audit.record",
    "data_description": "fedaudit.audit.record",
    "fit_attack": "fedaudit.audit.attack",
    "invert_recording": "fedaudit.audit.invert",
    "layer_leakage": "fedaudit.audit.attack",
    "leakage_of_target": "fedaudit.audit.attack",
    "load_audit_config": "fedaudit.audit.grid",
    "load_public_features": "fedaudit.audit.attack",
    "permutation_test": "fedaudit.audit.significance",
    "plan_audit": "fedaudit.audit.grid",
    "read_inversion": "fedaudit.audit.invert",
    "record_run": "fedaudit.audit.record",
    "run_audit": "fedaudit.audit.grid",
    "run_shadow": "fedaudit.audit.shadow",
    "save_attack_model": "fedaudit.audit.attack",
    "score_attack": "fedaudit.audit.attack",
    "setup_warnings": "fedaudit.audit.attack",
    "shadow_config": "fedaudit.audit.shadow",
    "shadow_folds": "fedaudit.audit.shadow",
    "shadow_files": "fedaudit.audit.attack",
    "shadow_paths": "fedaudit.audit.shadow",
    "target_config": "fedaudit.audit.attack",
    "target_feature_set": "fedaudit.audit.shadow",
    "target_n_frames": "fedaudit.audit.shadow",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_names("fedaudit.audit", _NAMES, globals())
