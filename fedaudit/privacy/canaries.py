"""Canary clients: audit the user-level privacy of a run from inside the run (one run, no retraining).

Implementation based on Andrew et al., "One-shot empirical privacy estimation
for federated learning" (2023): each of ``m`` canary clients sends a fixed
random direction of norm ``clip`` instead of a trained update, and is inserted
or left out at random with probability 1/2. After the run every canary is
scored by the cosine between its direction and what the adversary saw; the
scores of inserted against left-out canaries give the lower bounds of
:mod:`fedaudit.privacy.bounds` (Steinke, Nasr and Jagielski 2023; Jagielski et
al. 2020) and the Gaussian-DP estimate.

Two views, one per kind of claim:

* ``"aggregate"`` (user-level DP, ``udp``): an inserted canary's update goes
  through the client transforms and into the round's aggregate (the weighted
  mean of model deltas, as the server forms it); a canary is scored against
  the aggregates of the rounds it was scheduled for, inserted or not.
* ``"release"`` (local DP, ``ldp``): every scheduled canary releases an update
  through the transforms, its direction when inserted and an empty (all-zero)
  update when left out; a canary is scored against its own release.

Canaries never reach the model: the simulator keeps training on the real
clients' aggregate only, so the utility figures, the recording and the real
clients' accounting are those of a run without canaries (the canaries' noise
comes from a generator of its own). The aggregate a canary is scored against
is the one the server would have formed with the round's inserted canaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedaudit.exceptions import InvalidParameterError
from fedaudit.privacy.bounds import clopper_pearson_bound, gdp_estimate, one_run_bound_from_scores
from fedaudit.types import Accountant, ClientUpdate, Participation

__all__ = ["CanaryClients", "VIEWS", "canary_clients"]

#: What a canary is scored against: the round's aggregate (UDP) or its own release (LDP).
VIEWS: tuple[str, ...] = ("aggregate", "release")

#: Delta of the bounds when no DP defense claims one.
DEFAULT_DELTA = 1e-5


@dataclass(kw_only=True, eq=False)
class CanaryClients:
    """``n_canaries`` canary clients for one run (a :class:`fedaudit.types.CanarySource`).

    Each canary is inserted with probability 1/2 and joins ``rounds_per_canary``
    rounds drawn at random without replacement, so about
    ``n_canaries * rounds_per_canary / rounds`` canaries are scheduled per round
    (half of them inserted). Everything random comes from ``seed``.

    Parameters
    ----------
    n_canaries
        Number of canaries m, >= 4.
    rounds
        Rounds of the run (the schedule is drawn over them).
    clip
        Norm of a canary update: the defense's clip bound (gradient units).
    view
        ``"aggregate"`` or ``"release"`` (see the module docstring).
    rounds_per_canary
        Rounds each canary joins, 1 <= k <= rounds.
    confidence
        Confidence of the reported lower bound (the max of two bounds, each at
        ``1 - (1 - confidence) / 2``).
    seed
        Seed of the insertion draws, the schedule and the directions.

    Examples
    --------
    >>> c = CanaryClients(n_canaries=100, rounds=20, clip=1.0, view="aggregate", seed=0)
    >>> int(c.inserted.sum()), round(c.canaries_per_round, 1)
    (48, 5.0)
    """

    n_canaries: int
    rounds: int
    clip: float
    view: Literal["aggregate", "release"] = "aggregate"
    rounds_per_canary: int = 1
    confidence: float = 0.95
    seed: int = 0
    inserted: np.ndarray = field(init=False, repr=False)
    schedule: list[np.ndarray] = field(init=False, repr=False)
    joined: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name, low in (("n_canaries", 4), ("rounds", 1), ("rounds_per_canary", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise InvalidParameterError(f"The {name!r} parameter of CanaryClients must be an int >= {low}. "
                                            f"Got {value!r}.")
        if self.rounds_per_canary > self.rounds:
            raise InvalidParameterError(f"CanaryClients: rounds_per_canary ({self.rounds_per_canary}) exceeds the "
                                        f"run's {self.rounds} rounds.")
        if not (isinstance(self.clip, int | float) and math.isfinite(self.clip) and self.clip > 0):
            raise InvalidParameterError(f"The 'clip' parameter of CanaryClients must be a float > 0. Got {self.clip!r}.")
        if self.view not in VIEWS:
            raise InvalidParameterError(f"The 'view' parameter of CanaryClients must be one of {list(VIEWS)}. "
                                        f"Got {self.view!r}.")
        if not (0.0 < self.confidence < 1.0):
            raise InvalidParameterError(f"The 'confidence' of CanaryClients must be in (0, 1). Got {self.confidence!r}.")
        m, k = int(self.n_canaries), int(self.rounds_per_canary)
        rng = np.random.default_rng([self.seed, 0xCA4A])
        self.inserted = rng.random(m) < 0.5  # independently, as the one-run bound assumes
        joined = np.stack([rng.choice(self.rounds, size=k, replace=False) for _ in range(m)]) if k > 1 else (
            rng.integers(0, self.rounds, size=(m, 1)))
        self.joined = joined  # (m, k) rounds of each canary
        self.schedule = [np.flatnonzero((joined == r).any(axis=1)) for r in range(self.rounds)]
        self._dot = np.zeros(m)
        self._sq = np.zeros(m)
        self._dirs: dict[int, np.ndarray] = {}
        self._template: ClientUpdate | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}

    @property
    def canaries_per_round(self) -> float:
        """Mean number of canaries scheduled per round (inserted or not)."""
        return self.n_canaries * self.rounds_per_canary / self.rounds

    def direction(self, j: int, dim: int) -> np.ndarray:
        """Canary ``j``'s unit direction in the flattened parameter space (float64), from its own seed."""
        u = np.random.default_rng([self.seed, 0xD1, int(j)]).standard_normal(dim)
        return u / math.sqrt(_dot(u, u))

    def _unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for name, shape in self._shapes.items():
            size = int(np.prod(shape))
            out[name] = flat[start : start + size].reshape(shape).astype(np.float32)
            start += size
        return out

    def round_canaries(self, server_round: int, template: ClientUpdate) -> list[ClientUpdate]:
        if not self._shapes:
            self._shapes = {n: tuple(np.shape(a)) for n, a in template.arrays.items()}
            self._template = template
        dim = sum(int(np.prod(s)) for s in self._shapes.values())
        self._dirs = {int(j): self.direction(int(j), dim) for j in self.schedule[server_round]}
        out = []
        for j, u in self._dirs.items():
            if self.inserted[j]:
                arrays = self._unflatten(u * self.clip)
            elif self.view == "release":
                arrays = {n: np.zeros(s, dtype=np.float32) for n, s in self._shapes.items()}
            else:
                continue
            out.append(ClientUpdate(server_round=server_round, client_id=-1 - j, kind=template.kind, arrays=arrays,
                                    num_samples=template.num_samples, local_steps=template.local_steps,
                                    lr=template.lr))
        return out

    def observe_round(self, server_round: int, *, clients: list[ClientUpdate], canaries: list[ClientUpdate]) -> None:
        if self.view == "release":
            for c in canaries:
                j = -1 - c.client_id
                flat = _flat(c.arrays)
                self._dot[j] += _dot(self._dirs[j], flat)
                self._sq[j] += _dot(flat, flat)
        elif self._dirs:
            sent = [*clients, *canaries]
            total = float(sum(u.num_samples for u in sent))
            view = sum((u.num_samples / total) * u.lr * u.local_steps * _flat(u.arrays) for u in sent)
            sq = _dot(view, view)
            for j, u in self._dirs.items():
                self._dot[j] += _dot(u, view)
                self._sq[j] += sq
        self._dirs = {}

    @property
    def scores(self) -> np.ndarray:
        """Per canary: sum of <u, view_r> over its rounds / sqrt(sum of |view_r|^2) (its cosine when k = 1)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._sq > 0, self._dot / np.sqrt(self._sq), 0.0)

    def _participation(self) -> Participation:
        t = self._template
        assert t is not None
        sends = self.inserted | (self.view == "release")
        ids = np.repeat(np.flatnonzero(sends), self.rounds_per_canary)
        rounds = self.joined[sends].reshape(-1)
        n = len(ids)
        return Participation(
            client_id=ids.astype(np.int64), server_round=rounds.astype(np.int64),
            local_steps=np.full(n, t.local_steps, dtype=np.int64), num_samples=np.full(n, t.num_samples, np.int64),
            n_train=np.full(self.n_canaries, t.num_samples, dtype=np.int64), batch_size=int(t.num_samples),
            rounds=self.rounds, n_selected=max(1, round(self.canaries_per_round)), n_clients=self.n_canaries,
        )

    def claims(self, accountants: tuple[Accountant, ...]) -> list[dict[str, Any]]:
        """What each accountant claims for the canaries (user or release level; sample level is skipped)."""
        if self._template is None:
            return []
        participation = self._participation()
        out = []
        for account in accountants:
            spent = account(participation)
            if spent.level == "sample":
                continue
            eps = list(spent.epsilon_per_client.values())
            out.append({"mechanism": spent.mechanism, "level": spent.level, "delta": float(spent.delta),
                        "epsilon": float(max(eps)) if eps else None, "accountant": spent.accountant})
        return out

    def finish(self, accountants: tuple[Accountant, ...]) -> dict[str, Any]:
        """The audit: claimed epsilon of the canaries, the lower bounds, the GDP estimate (JSON-ready)."""
        claimed = self.claims(accountants)
        delta = min((c["delta"] for c in claimed), default=DEFAULT_DELTA)
        scores = self.scores
        s_in, s_out = scores[self.inserted], scores[~self.inserted]
        each = 1.0 - (1.0 - self.confidence) / 2
        one_run = one_run_bound_from_scores(scores, self.inserted, delta=delta, confidence=each)
        cp = clopper_pearson_bound(s_in, s_out, delta=delta, confidence=each)
        gdp = gdp_estimate(s_in, s_out, delta=delta)
        lower = max(one_run.epsilon, cp.epsilon)
        claim_eps = [c["epsilon"] for c in claimed if c["epsilon"] is not None]
        claim = min(claim_eps) if claim_eps else None
        return {
            "method": "canary clients (Andrew et al. 2023)", "view": self.view, "n_canaries": self.n_canaries,
            "n_inserted": int(self.inserted.sum()), "rounds_per_canary": self.rounds_per_canary,
            "canaries_per_round": self.canaries_per_round, "clip": float(self.clip), "seed": self.seed,
            "delta": delta, "confidence": self.confidence, "claimed": claimed,
            "epsilon_claimed": claim, "epsilon_lower_bound": lower,
            "exceeds_claim": None if claim is None else bool(lower > claim),
            "bounds": {"one_run": one_run.to_dict(), "clopper_pearson": cp.to_dict()},
            "gdp": gdp.to_dict(),
        }

    def canary_table(self) -> dict[str, Any]:
        """Every canary's insertion flag, rounds and score, JSON-ready (kept apart from the recording)."""
        return {"canary": list(range(self.n_canaries)), "inserted": self.inserted.tolist(),
                "rounds": self.joined.tolist(), "score": self.scores.tolist()}


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not BLAS: a threaded BLAS dot stalls for milliseconds on a loaded machine.
    return float(np.einsum("i,i->", a, b))


def _flat(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays.values()])


def canary_clients(
    settings: Mapping[str, Any], *, n_canaries: int, rounds: int, seed: int = 0, rounds_per_canary: int = 1,
    confidence: float = 0.95, clip: float | None = None,
) -> CanaryClients:
    """Canary clients fitted to a run's defenses (their resolved ``settings``, ``DefensePieces.settings``).

    With ``ldp`` the canaries are scored against their own release, else against the
    aggregate; their norm is the clip of ``ldp`` or ``udp`` (``clip`` overrides it; 1.0
    when neither defense runs).
    """
    names = list(settings.get("names", []))
    view: Literal["aggregate", "release"] = "release" if "ldp" in names else "aggregate"
    if clip is None:
        source = settings.get("ldp") if "ldp" in names else settings.get("udp") if "udp" in names else None
        clip = float(source["clip"]) if source and "clip" in source else 1.0
    return CanaryClients(n_canaries=n_canaries, rounds=rounds, clip=clip, view=view,
                         rounds_per_canary=rounds_per_canary, confidence=confidence, seed=seed)
