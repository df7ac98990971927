"""Compose defenses into the pieces a run plugs in, and make defenses from flat options.

Defenses combine: their client transforms run in the order given (pruning,
user-level DP, local DP when the defenses come from
:func:`defenses_from_options`), DP-SGD replaces local training, and SEFL or the
LDP client selection strategy replace the server's aggregation (at most one of
each). Every resolved setting goes into the run's configuration; at the end of
the run every accountant reports the privacy its mechanism spent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedaudit.defenses._validation import is_real
from fedaudit.defenses.registry import _MISSING, DEFENSES, Defense, DefenseContext, _option_defaults
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import Accountant, Aggregator, DefensePieces, Participation, TrainerFactory, Transform

__all__ = ["build_defenses", "defenses_from_options", "describe_options", "option_defaults"]


def build_defenses(defenses: Sequence[Defense], context: DefenseContext) -> DefensePieces:
    """Build every defense for the run of ``context`` and compose their pieces.

    Parameters
    ----------
    defenses
        Defenses to apply, each at most once; their transforms run in this order.
    context
        The run they defend (:meth:`DefenseContext.for_table` makes it from a config and a table).

    Returns
    -------
    DefensePieces
        Transforms, accountants and summaries concatenated; the one client trainer and the one
        aggregator, if any; ``settings`` is ``{"names": [...], <name>: <resolved settings>, ...}``.

    Raises
    ------
    InvalidParameterError
        If a defense is given twice, or two defenses both replace local training or both
        replace the server's aggregation.

    Examples
    --------
    >>> from fedaudit.config import FLConfig
    >>> from fedaudit.defenses import PruneDefense
    >>> pieces = build_defenses([PruneDefense(percent=50.0)],
    ...                         DefenseContext(config=FLConfig(), n_clients=10, n_train_typical=40))
    >>> pieces.settings
    {'names': ['prune'], 'prune': {'percent': 50.0}}
    """
    for d in defenses:
        if not isinstance(d, Defense):
            raise InvalidParameterError(
                f"build_defenses takes Defense instances (see fedaudit.defenses.DEFENSES). Got {d!r} instead."
            )
    names = [d.name for d in defenses]
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"A defense is named twice in {names}.")
    transforms: list[Transform] = []
    accountants: list[Accountant] = []
    summaries: list[Callable[[Participation], Mapping[str, Any]]] = []
    settings: dict[str, Any] = {"names": names}
    trainer: tuple[TrainerFactory, str] | None = None
    aggregator: tuple[Aggregator, str] | None = None
    for defense in defenses:
        pieces = defense.build(context)
        if pieces.client_trainer is not None:
            if trainer is not None:
                raise InvalidParameterError(
                    f"{defense.name} cannot be combined with {trainer[1]}: both replace the clients' local training."
                )
            trainer = (pieces.client_trainer, defense.name)
        if pieces.aggregator is not None:
            if aggregator is not None:
                raise InvalidParameterError(f"{defense.name} cannot be combined with {aggregator[1]}.")
            aggregator = (pieces.aggregator, getattr(pieces.aggregator, "title", f"the {defense.name} aggregation"))
        clash = sorted(set(settings) & set(pieces.settings))
        if clash:
            raise InvalidParameterError(f"{defense.name} writes settings {clash} that another defense already wrote.")
        transforms.extend(pieces.transforms)
        accountants.extend(pieces.accountants)
        summaries.extend(pieces.summaries)
        settings.update(pieces.settings)
    return DefensePieces(
        transforms=tuple(transforms), client_trainer=None if trainer is None else trainer[0],
        aggregator=None if aggregator is None else aggregator[0], accountants=tuple(accountants),
        summaries=tuple(summaries), settings=settings,
    )


def option_defaults() -> dict[str, Any]:
    """Every option key of the registered defenses, with the default of the field it fills.

    Options without a default (a required field) map to ``None``.
    """
    out: dict[str, Any] = {}
    for cls in DEFENSES.values():
        for key, default in _option_defaults(cls).items():
            out.setdefault(key, None if default is _MISSING else default)
    return out


def _check_options(names: Sequence[str], options: Mapping[str, Any]) -> None:
    """The cross-defense checks of a defense choice on the command line."""
    unknown = [n for n in names if n not in DEFENSES]
    if unknown:
        raise InvalidParameterError(f"Unknown defense {unknown[0]!r}; choose from {sorted(DEFENSES)} (or none).")
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"A defense is named twice in {list(names)}.")
    known = option_defaults()
    stray = sorted(set(options) - set(known))
    if stray:
        raise InvalidParameterError(f"Unknown defense options {stray}; the defenses take {sorted(known)}.")
    opts = {**known, **options}
    needs_noise = {"udp", "dp-sgd"} & set(names)
    if needs_noise and (opts.get("noise_multiplier") is None) == (opts.get("target_epsilon") is None):
        raise InvalidParameterError(
            f"{sorted(needs_noise)} need exactly one of --noise-multiplier or --target-epsilon; got "
            f"noise_multiplier={opts.get('noise_multiplier')!r}, target_epsilon={opts.get('target_epsilon')!r}."
        )
    if "sefl" in names and "prune" in names:
        raise InvalidParameterError("sefl already prunes (--prune-percent); do not also name 'prune'.")
    css_keep = opts.get("css_keep", 1.0)
    if not (is_real(css_keep) and 0.0 < css_keep <= 1.0):
        raise InvalidParameterError(f"css_keep must be in (0, 1]. Got {css_keep!r}.")
    if css_keep < 1.0 and "ldp" not in names:
        raise InvalidParameterError("The client selection strategy (--css-keep) applies to the 'ldp' defense only.")


def defenses_from_options(names: Sequence[str], options: Mapping[str, Any]) -> list[Defense]:
    """Make the named defenses from one flat mapping of options (what the command line gives).

    Each defense takes the options that fill its fields (``Defense.options()``: a field's own
    name, or the key its ``option_keys`` gives it); options it does not take are ignored, and
    missing ones take the field's default.

    Parameters
    ----------
    names
        Registry keys (``"udp"``, ``"sefl"``, ...), each at most once.
    options
        Option key to value: ``clip``, ``noise_multiplier``, ``target_epsilon``, ``delta``,
        ``accountant``, ``max_grad_norm``, ``ldp_epsilon``, ``css_keep``, ``prune_percent``,
        ``key_bits``, ``he_mode``, ``he_clip``, ``value_bits``, ``encrypted_rounds``,
        ``insecure_key`` (and those of any further registered defense).

    Returns
    -------
    list[Defense]
        In registry order (prune, udp, ldp, dp-sgd, sefl, then later registrations), the
        order their client transforms apply.

    Raises
    ------
    InvalidParameterError
        For an unknown name or option, a name given twice, ``udp``/``dp-sgd`` without exactly
        one of ``noise_multiplier`` and ``target_epsilon``, ``sefl`` with ``prune``,
        ``css_keep`` outside (0, 1] or below 1 without ``ldp``, or an option a defense refuses.

    Examples
    --------
    >>> defenses_from_options(["udp"], {"clip": 0.5, "noise_multiplier": 1.0, "prune_percent": 50.0})
    [UserLevelDPDefense(clip=0.5, noise_multiplier=1.0, target_epsilon=None, delta=1e-05, accountant='rdp')]
    """
    _check_options(names, options)
    out: list[Defense] = []
    for name, cls in DEFENSES.items():
        if name in names:
            out.append(cls(**{f: options[key] for f, key in cls.options().items() if key in options}))
    return out


def describe_options(names: Sequence[str], options: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready record of a defense choice: ``names`` and every option, defaults filled in.

    This is what a recording keeps as ``defense_spec`` in ``/run/config``, next to the resolved
    ``defenses`` settings.

    Examples
    --------
    >>> spec = describe_options(["ldp"], {"ldp_epsilon": 8.0})
    >>> spec["names"], spec["ldp_epsilon"], spec["prune_percent"]
    (['ldp'], 8.0, 80.0)
    """
    return {"names": list(names), **option_defaults(), **dict(options)}
