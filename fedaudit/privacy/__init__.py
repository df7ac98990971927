"""Empirical privacy audit: canary clients and epsilon lower bounds (pure numpy/scipy).

Imports only the ground floor (:mod:`fedaudit.types`, :mod:`fedaudit.exceptions`);
the simulator takes a :class:`CanaryClients` through the
:class:`fedaudit.types.CanarySource` protocol. See ``docs/privacy-audit.md``.
"""

from fedaudit.privacy.bounds import (
    EpsilonBound,
    GDPEstimate,
    clopper_pearson_bound,
    clopper_pearson_interval,
    gdp_delta,
    gdp_epsilon,
    gdp_estimate,
    one_run_bound,
    one_run_bound_from_scores,
    one_run_p_value,
)
from fedaudit.privacy.canaries import VIEWS, CanaryClients, canary_clients

__all__ = [
    "CanaryClients",
    "EpsilonBound",
    "GDPEstimate",
    "VIEWS",
    "canary_clients",
    "clopper_pearson_bound",
    "clopper_pearson_interval",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_estimate",
    "one_run_bound",
    "one_run_bound_from_scores",
    "one_run_p_value",
]
