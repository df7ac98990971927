"""The defense registry: the :class:`Defense` base, :data:`DEFENSES` and :func:`register_defense`.

Every defense is one frozen, keyword-only dataclass whose fields are its
options, registered under a short name::

    @register_defense
    @dataclass(frozen=True, kw_only=True)
    class SignDefense(Defense):
        name: ClassVar[str] = "sign"
        description: ClassVar[str] = "send only the sign of each value"

        def build(self, context: DefenseContext) -> DefensePieces:
            return DefensePieces(transforms=(...,), settings={"sign": {}})

``build`` turns the options into the pieces a simulator plugs in
(:class:`~fedaudit.types.DefensePieces`); :func:`~fedaudit.defenses.build.build_defenses`
composes the pieces of several defenses. See ``docs/adding-a-defense.md``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import DefensePieces

if TYPE_CHECKING:
    from fedaudit.data.table import FeatureTable

__all__ = ["DEFENSES", "Defense", "DefenseContext", "register_defense"]


@dataclass(frozen=True, kw_only=True)
class DefenseContext:
    """What a defense may know of the run it defends when it builds its pieces.

    Parameters
    ----------
    config
        The run's configuration (rounds, client fraction, batch size, algorithm, ...).
    n_clients
        Number of clients of the run's split (SEFL sizes its packing for the clients of a round).
    n_train_typical
        Median number of training samples of a client (DP-SGD calibrates its sample rate on it).
    """

    config: FLConfig
    n_clients: int
    n_train_typical: int

    def __post_init__(self) -> None:
        if not isinstance(self.config, FLConfig):
            raise InvalidParameterError(
                f"The 'config' parameter of DefenseContext must be an FLConfig. Got {type(self.config).__name__} "
                "instead."
            )
        for name in ("n_clients", "n_train_typical"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InvalidParameterError(
                    f"The {name!r} parameter of DefenseContext must be an int >= 1. Got {value!r} instead."
                )

    @classmethod
    def for_table(cls, config: FLConfig, table: FeatureTable) -> DefenseContext:
        """The context of a run of ``config`` on ``table``: client count and sizes from its split.

        The split is the one the simulator makes (:func:`fedaudit.data.clients.split_clients`
        with the configuration's folds, clients per speaker, validation share and seed).
        """
        from fedaudit.data.clients import split_clients

        split = split_clients(table, n_folds=config.n_folds, fold=config.fold,
                              clients_per_speaker=config.clients_per_speaker, val_fraction=config.val_fraction,
                              seed=config.seed)
        return cls(config=config, n_clients=len(split.clients),
                   n_train_typical=int(np.median([len(c.train_rows) for c in split.clients])))


class Defense(ABC):
    """Base of every registered defense: a frozen, keyword-only dataclass of its options.

    Class attributes
    ----------------
    name
        Registry key (``"udp"``), also the key of the defense's settings in a run's configuration.
    description
        One line of help text (the command line shows it).
    option_keys
        Field name to the command-line option key that fills it, for the fields whose
        names differ (``{"epsilon": "ldp_epsilon"}``); every other field is filled by
        the option of its own name (see :func:`~fedaudit.defenses.build.defenses_from_options`).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    option_keys: ClassVar[Mapping[str, str]] = MappingProxyType({})

    @classmethod
    def options(cls) -> dict[str, str]:
        """Field name to the option key that fills it, for every field."""
        return {f.name: cls.option_keys.get(f.name, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @abstractmethod
    def build(self, context: DefenseContext) -> DefensePieces:
        """The pieces the simulator plugs in for this defense in the run of ``context``.

        ``settings`` of the returned pieces maps ``self.name`` (and any further entry the
        defense adds) to JSON-ready resolved settings.
        """


#: Registry key to defense class, in registration order (the order their client transforms apply).
DEFENSES: dict[str, type[Defense]] = {}

D = TypeVar("D", bound=type[Defense])


def register_defense(cls: D) -> D:
    """Class decorator: add a defense to :data:`DEFENSES` under ``cls.name``.

    Raises
    ------
    TypeError
        If ``cls`` is not a frozen, keyword-only dataclass subclassing :class:`Defense`
        with a ``name`` and a ``description``, or an option key it shares with a
        registered defense has another default there.
    ValueError
        If another class is registered under the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Defense)):
        raise TypeError(f"register_defense takes a subclass of Defense. Got {cls!r} instead.")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass: @dataclass(frozen=True, kw_only=True).")
    if not all(f.kw_only for f in dataclasses.fields(cls)):
        raise TypeError(f"{cls.__name__} must be a keyword-only dataclass: @dataclass(frozen=True, kw_only=True).")
    name, description = getattr(cls, "name", None), getattr(cls, "description", None)
    if not isinstance(name, str) or not name or not isinstance(description, str) or not description:
        raise TypeError(f"{cls.__name__} needs the class attributes name: ClassVar[str] and description: ClassVar[str].")
    unknown = sorted(set(cls.option_keys) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"{cls.__name__}.option_keys names fields it does not have: {unknown}.")
    if name in DEFENSES and DEFENSES[name] is not cls:
        raise ValueError(f"A defense named {name!r} is already registered ({DEFENSES[name].__name__}).")
    defaults = _option_defaults(cls)
    for other in DEFENSES.values():
        for key, default in _option_defaults(other).items():
            if key in defaults and _differ(defaults[key], default):
                raise TypeError(
                    f"{cls.__name__} fills option {key!r} with default {defaults[key]!r}, but {other.__name__} "
                    f"uses {default!r}; one option has one default."
                )
    DEFENSES[name] = cls
    return cls


_MISSING = object()


def _option_defaults(cls: type[Defense]) -> dict[str, Any]:
    """Option key to the default of the field it fills (``_MISSING`` when the field has none)."""
    by_field = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for field_name, key in cls.options().items():
        f = by_field[field_name]
        if f.default is not dataclasses.MISSING:
            out[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[key] = f.default_factory()
        else:
            out[key] = _MISSING
    return out


def _differ(a: object, b: object) -> bool:
    return not (a is b or (type(a) is type(b) and a == b))
