"""The small recordings of the attack tests serve the attack step's tests too."""

from tests.attacks.conftest import recordings, shadow_stores, target_store, public_table, knowledge, documented_attack  # noqa: F401
