"""Pipeline steps run from configuration: record a simulated run, shadow training, fit and score attacks.

The command line calls these; the audit grid builds on them. This is the only
layer that puts the simulator (``fl/``), the recorder (``record/``), the
defenses and the attacks together.
"""

from fedaudit.audit.record import build_run_defenses, data_description, record_run
from fedaudit.audit.shadow import run_shadow, shadow_config, shadow_paths, target_feature_set

__all__ = ["build_run_defenses", "data_description", "record_run", "run_shadow", "shadow_config", "shadow_paths",
           "target_feature_set"]
