"""Pipeline step: how far an attack's score stands above attackers whose shadow labels mean nothing.

A shadow-trained attack with a handful of shadow speakers can learn which shadow speakers resemble
which target clients as readily as it learns gender, so its ASR alone, and the 0.5 chance line,
overstate what it shows. :func:`permutation_test` refits the same attack (same class, same
hyper-parameters) on the same shadow recordings with the speakers' genders replaced by gender-free,
gender-balanced relabellings (:func:`fedaudit.metrics.permutation.balanced_relabellings`), scores
each refit on the target, and compares the observed score with that null distribution. The
relabelling reaches the attack through its normal fit input: each shadow recording is wrapped in a
:class:`RelabelledStore`, a read-only view whose ``ground_truth()`` gives the new genders.

:func:`shadow_jackknife` answers another question: how much does the score depend on which shadow
runs the attacker had? It refits leaving one shadow run out at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedaudit.attacks.base import Attack, AttackerKnowledge
from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics.asr import attack_success, row_probabilities
from fedaudit.metrics.permutation import Jackknife, Significance, balanced_relabellings, jackknife, significance
from fedaudit.record.reader import UpdateStore

__all__ = [
    "DEFAULT_PERMUTATIONS",
    "RelabelledStore",
    "Statistic",
    "asr_statistic",
    "best_layer_statistic",
    "layer_statistic",
    "permutation_test",
    "refit",
    "shadow_jackknife",
    "shadow_speakers",
]

#: Relabellings of the audit grid and the commands' suggestion (smallest p-value 1/21 < 0.05).
DEFAULT_PERMUTATIONS = 20

#: Scores a fitted attack on the target: ``{name: score}`` (one name per figure tested).
Statistic = Callable[[Attack, UpdateStore], Mapping[str, float]]


class RelabelledStore(UpdateStore):
    """A read-only view of an opened recording whose ground truth carries other genders.

    Every read goes to the wrapped store (the same open file); only :meth:`ground_truth` differs.
    Closing the view leaves the wrapped store open.

    Parameters
    ----------
    store
        The opened shadow recording.
    gender
        The gender to report for each of its clients, in the order of ``store.client_ids``.
    """

    def __init__(self, store: UpdateStore, gender: Sequence[str] | np.ndarray) -> None:  # noqa: D107
        gender = np.asarray(gender).astype(str).astype(object)
        if len(gender) != len(store.client_ids):
            raise InvalidParameterError(
                f"A relabelling of {store.path} needs {len(store.client_ids)} genders (one per client); "
                f"got {len(gender)}."
            )
        self.__dict__.update(vars(store))  # no __init__ of the base: the file is opened and checked already
        self._ground_truth = {**store.ground_truth(), "gender": gender}
        self.base = store

    def close(self) -> None:
        """Nothing to close: the wrapped store owns the file."""

    def refresh(self) -> None:
        raise InvalidParameterError("A relabelled view cannot be refreshed; refresh the wrapped recording.")


def shadow_speakers(stores: Sequence[UpdateStore]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct speakers of the shadow recordings and each one's gender (as the attacker recorded it).

    Raises
    ------
    InvalidParameterError
        If a recording lacks speaker ids or genders, or a speaker has two genders.
    """
    gender_of: dict[str, str] = {}
    for store in stores:
        truth = store.ground_truth()
        if "gender" not in truth or "speaker_id" not in truth:
            raise InvalidParameterError(
                f"Shadow recording {store.path} holds no speaker ids and genders; the permutation test relabels "
                "the attacker's own shadow speakers (record shadow runs with `fedaudit shadow`)."
            )
        for speaker, gender in zip(truth["speaker_id"].tolist(), truth["gender"].tolist(), strict=True):
            known = gender_of.setdefault(str(speaker), str(gender))
            if known != str(gender):
                raise InvalidParameterError(f"Shadow speaker {speaker!r} is recorded as both {known} and {gender}.")
    speakers = np.array(sorted(gender_of), dtype=object)
    return speakers, np.array([gender_of[s] for s in speakers], dtype=object)


def refit(attack: Attack, shadows: Sequence[UpdateStore], *, target_config: Mapping[str, Any] | None = None,
          public: Any = None) -> Attack:
    """A fresh attack of the same class and hyper-parameters, fitted on ``shadows``."""
    data = AttackerKnowledge(shadows=list(shadows), public=public, target_config=target_config)
    return type(attack)(**attack.get_params()).fit(data)


def asr_statistic(*, repeats: int = 10, seed: int = 0, key: str = "1") -> Statistic:
    """The single-update ASR of the attack as fitted (``fedaudit attack``'s headline figure)."""

    def score(attack: Attack, target: UpdateStore) -> dict[str, float]:
        params = attack.required_parameters()
        proba = row_probabilities(attack.predict_proba, target, params)
        return {key: attack_success(attack.predict_proba, target, params, repeats=repeats, seed=seed,
                                    row_proba=proba, n_bootstrap=1).asr}

    return score


def layer_statistic(*, repeats: int = 10, seed: int = 0) -> Statistic:
    """The single-update ASR of each layer alone and fused (``fedaudit leakage``'s rows)."""
    from fedaudit.audit.attack import layer_leakage

    def score(attack: Attack, target: UpdateStore) -> dict[str, float]:
        return {k: r.asr for k, r in layer_leakage(attack, target, repeats=repeats, seed=seed).items()}

    return score


def best_layer_statistic(*, repeats: int = 10, seed: int = 0) -> Statistic:
    """The best single-update ASR over the layers and the fusion (the figure an audit's finding cites).

    The null takes the best over the same rows after each refit, so choosing the best row is
    accounted for.
    """
    per_layer = layer_statistic(repeats=repeats, seed=seed)

    def score(attack: Attack, target: UpdateStore) -> dict[str, float]:
        return {"best": max(per_layer(attack, target).values())}

    return score


def permutation_test(
    attack: Attack,
    *,
    shadows: Sequence[UpdateStore],
    target: UpdateStore,
    statistic: Statistic,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    public: Any = None,
    observed: Mapping[str, float] | None = None,
    statistic_name: str = "asr",
) -> dict[str, Significance]:
    """Test a fitted attack against refits on gender-free relabellings of its shadow speakers.

    Parameters
    ----------
    attack
        The attack fitted on the true shadow labels (its class and hyper-parameters are reused).
    shadows
        The shadow recordings it was fitted on (opened).
    target
        The target recording (with ground truth, to score).
    statistic
        Scores a fitted attack on the target (:func:`asr_statistic`, :func:`layer_statistic`,
        :func:`best_layer_statistic`).
    n_permutations
        Relabellings at most; every one when there are fewer (exhaustive), else drawn.
    seed
        Seed of the draw of relabellings.
    public
        Public features, for an attack that also reads them.
    observed
        The observed scores, when already computed (else ``statistic(attack, target)``).
    statistic_name
        What the statistic is, recorded in each result.

    Returns
    -------
    dict
        One :class:`~fedaudit.metrics.permutation.Significance` per key of the statistic.

    Raises
    ------
    InvalidParameterError
        If the attack is not fitted on shadow recordings, or the shadow speakers admit no
        gender-free relabelling (fewer than two speakers of a gender).
    """
    if not attack.needs_shadow:
        raise InvalidParameterError(
            f"The {attack.name} attack is not fitted on shadow recordings, so there are no shadow labels to "
            "permute; the permutation test applies to shadow-trained attacks only."
        )
    if not shadows:
        raise InvalidParameterError("The permutation test needs the shadow recordings the attack was fitted on.")
    speakers, genders = shadow_speakers(shadows)
    relabellings, possible = balanced_relabellings(genders, n=n_permutations, seed=[seed, 4242])
    if not relabellings:
        counts = {g: int(np.sum(genders == g)) for g in ("F", "M")}
        raise InvalidParameterError(
            f"The shadow runs hold {counts['F']} female and {counts['M']} male speakers: no gender-free relabelling "
            "exists, so the permutation test cannot run; record shadow runs with more speakers."
        )
    observed = dict(observed) if observed is not None else dict(statistic(attack, target))
    config = dict(target.config)
    null: dict[str, list[float]] = {k: [] for k in observed}
    for labels in relabellings:
        label_of = dict(zip(speakers.tolist(), labels.tolist(), strict=True))
        views = [RelabelledStore(s, [label_of[str(sp)] for sp in s.ground_truth()["speaker_id"].tolist()])
                 for s in shadows]
        scores = statistic(refit(attack, views, target_config=config, public=public), target)
        for k in observed:
            null[k].append(float(scores[k]))
    return {k: significance(observed[k], null[k], n_possible=possible, statistic=statistic_name) for k in observed}


def shadow_jackknife(
    attack: Attack,
    *,
    shadows: Sequence[UpdateStore],
    target: UpdateStore,
    statistic: Statistic,
    public: Any = None,
    observed: Mapping[str, float] | None = None,
) -> dict[str, Jackknife]:
    """Refit leaving one shadow run out at a time; a jackknife interval of each score over shadow runs.

    The interval answers "how much would this figure move with other shadow runs of the same setup?",
    which the bootstrap over target clients (``ci_low``, ``ci_high``) does not ask.

    Raises
    ------
    InvalidParameterError
        With fewer than two shadow runs.
    """
    if len(shadows) < 2:
        raise InvalidParameterError(
            f"A jackknife over shadow runs needs at least 2 of them; got {len(shadows)}. Record more with "
            "`fedaudit shadow --runs`."
        )
    observed = dict(observed) if observed is not None else dict(statistic(attack, target))
    config = dict(target.config)
    loo: dict[str, list[float]] = {k: [] for k in observed}
    for k in range(len(shadows)):
        rest = [s for i, s in enumerate(shadows) if i != k]
        scores = statistic(refit(attack, rest, target_config=config, public=public), target)
        for key in observed:
            loo[key].append(float(scores[key]))
    return {k: jackknife(observed[k], loo[k], unit="shadow run") for k in observed}
