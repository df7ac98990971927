"""The attack interface, the attack registry, and saving fitted attacks without pickles.

An attack reads recordings (:class:`~fedaudit.record.UpdateStore`) only: it
never imports the simulator, so it works on runs recorded from any framework.
It may read a store's ``ground_truth`` to *fit* on shadow recordings (the
attacker owns those) and the metrics read it to *score*; it never reads the
target's ground truth to predict.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from fedaudit._version import __version__
from fedaudit.data.table import GENDERS
from fedaudit.exceptions import FedAuditError, InvalidParameterError, RecordingError

__all__ = [
    "ATTACKS",
    "ATTACK_MODEL_VERSION",
    "Attack",
    "NotFittedError",
    "ShapeMismatchError",
    "check_is_fitted",
    "gender_labels",
    "load_attack",
    "register_attack",
    "resolve_layers",
    "shadow_hash",
]

ATTACK_MODEL_VERSION = "1.0.0"

#: Registry key -> attack class.
ATTACKS: dict[str, type[Attack]] = {}


class NotFittedError(FedAuditError, ValueError, AttributeError):
    """An attack was used before :meth:`Attack.fit`."""

    exit_code = 2


class ShapeMismatchError(FedAuditError, ValueError):
    """A recording's architecture differs from the one an attack was fitted on."""

    exit_code = 2


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator adding an attack to :data:`ATTACKS` under ``cls.name``."""
    ATTACKS[cls.name] = cls
    return cls


def check_is_fitted(attack: Attack) -> None:
    if not getattr(attack, "fitted_", False):
        raise NotFittedError(
            f"This {type(attack).__name__} is not fitted yet; call fit() on shadow recordings "
            "or load a fitted attack model first."
        )


def resolve_layers(layers: Sequence[str] | Sequence[int] | None, available: Sequence[str]) -> list[str]:
    """Layer names from names or 1-based numbers (the CLI numbers layers from 1, input first)."""
    if layers is None:
        return list(available)
    out = []
    for layer in layers:
        if isinstance(layer, (int, np.integer)):
            if not 1 <= int(layer) <= len(available):
                raise InvalidParameterError(
                    f"Layer {int(layer)} does not exist; this model has layers 1 to {len(available)} ({list(available)})."
                )
            out.append(available[int(layer) - 1])
        elif layer in available:
            out.append(str(layer))
        else:
            raise InvalidParameterError(f"Unknown layer {layer!r}; this model has layers {list(available)}.")
    return out


def shadow_hash(paths: Sequence[str | os.PathLike[str]]) -> str:
    """SHA-256 over the shadow recordings' bytes (in the given order)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def gender_labels(genders: Sequence[str] | np.ndarray) -> np.ndarray:
    """``"F"`` -> 0, ``"M"`` -> 1 (the column order of every ``predict_proba``)."""
    genders = np.asarray(genders)
    bad = sorted(set(genders.tolist()) - set(GENDERS))
    if bad:
        raise RecordingError(f"Ground-truth genders {bad} are not 'F' or 'M'.")
    return (genders == GENDERS[1]).astype(np.int64)


class Attack(ABC):
    """A gender inference attack on client updates.

    Subclasses set ``name``, take their hyper-parameters as keyword arguments
    stored unchanged in ``__init__``, set fitted state (ending in ``_``) in
    :meth:`fit`, and implement :meth:`_predict_proba`, :meth:`_state` and
    :meth:`_load_state`.

    The columns of every probability array follow :data:`~fedaudit.data.table.GENDERS`:
    column 0 is ``"F"``, column 1 ``"M"``.
    """

    name: ClassVar[str] = "attack"

    # -- fitting -------------------------------------------------------------
    @abstractmethod
    def fit(self, shadows: Sequence[Any]) -> Self:
        """Fit on shadow recordings (whose ground truth the attacker owns)."""

    def required_parameters(self) -> list[str]:
        """Parameter names (``"fc1.weight"``) the fitted attack reads from a recording."""
        check_is_fitted(self)
        return list(self.parameters_)

    def predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``(n, 2)`` of ``("F", "M")`` for ``n`` updates given as parameter arrays."""
        check_is_fitted(self)
        missing = [p for p in self.parameters_ if p not in updates]
        if missing:
            raise InvalidParameterError(f"{type(self).__name__} needs parameters {missing} that were not given.")
        for p in self.parameters_:
            got = tuple(updates[p].shape[1:])
            if got != tuple(self.shapes_[p]):
                raise ShapeMismatchError(
                    f"Parameter {p} has shape {got} in the target but {tuple(self.shapes_[p])} in the attack model; "
                    "the attack was fitted on another architecture or feature set."
                )
        return self._predict_proba(updates)

    @abstractmethod
    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def check_store(self, store: Any) -> None:
        """Raise :class:`ShapeMismatchError` naming both shapes if ``store`` does not fit this attack."""
        check_is_fitted(self)
        for p in self.parameters_:
            try:
                shape = tuple(store.shape(p))
            except InvalidParameterError:
                raise ShapeMismatchError(
                    f"{store.path} has no parameter {p}, which the attack model reads; "
                    f"its parameters are {store.parameter_names}."
                ) from None
            if shape != tuple(self.shapes_[p]):
                raise ShapeMismatchError(
                    f"{store.path} has {p} of shape {shape}, but the attack model was fitted on shape "
                    f"{tuple(self.shapes_[p])}; fit an attack on shadow runs of the same architecture and features."
                )

    # -- persistence -----------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    @abstractmethod
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Fitted state as (tensors, JSON-ready metadata)."""

    @abstractmethod
    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None: ...

    def save(self, path: str | os.PathLike[str], *, card: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
        """Write ``<path>.pt`` (tensors only) and ``<path>.json`` (the card). Returns the .json path."""
        check_is_fitted(self)
        stem = Path(path)
        if stem.suffix in (".pt", ".json"):
            stem = stem.with_suffix("")
        pt, js = stem.with_suffix(".pt"), stem.with_suffix(".json")
        if not overwrite and (pt.exists() or js.exists()):
            raise InvalidParameterError(f"{js} already exists; choose another name or pass --force to overwrite it.")
        tensors, meta = self._state()
        body = {
            "format": "fedaudit.attack_model",
            "format_version": ATTACK_MODEL_VERSION,
            "attack": self.name,
            "params": _jsonable(self.get_params()),
            "parameters": list(self.parameters_),
            "shapes": {k: list(v) for k, v in self.shapes_.items()},
            "state": _jsonable(meta),
            "fedaudit_version": __version__,
            **_jsonable(dict(card or {})),
        }
        tmp_pt, tmp_js = pt.with_suffix(".pt.tmp"), js.with_suffix(".json.tmp")
        torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp_pt)
        tmp_js.write_text(json.dumps(body, indent=2, sort_keys=True))
        os.replace(tmp_pt, pt)
        os.replace(tmp_js, js)
        return js


def load_attack(path: str | os.PathLike[str]) -> Attack:
    """Load a fitted attack from its ``.json`` card and ``.pt`` tensors (never unpickles objects)."""
    stem = Path(path)
    if stem.suffix in (".pt", ".json"):
        stem = stem.with_suffix("")
    js, pt = stem.with_suffix(".json"), stem.with_suffix(".pt")
    if not js.is_file() or not pt.is_file():
        raise InvalidParameterError(
            f"No attack model at {stem} (expected {js.name} and {pt.name}); fit one with `fedaudit attack --save-model NAME`."
        )
    try:
        card = json.loads(js.read_text())
    except json.JSONDecodeError as err:
        raise InvalidParameterError(f"{js} is not valid JSON ({err}); the attack model card is damaged.") from None
    if card.get("format") != "fedaudit.attack_model":
        raise InvalidParameterError(f"{js} is not a fedaudit attack model card.")
    major = str(card.get("format_version", "0")).split(".")[0]
    if major != ATTACK_MODEL_VERSION.split(".")[0]:
        raise InvalidParameterError(
            f"{js} uses attack model format {card.get('format_version')}, but this fedaudit reads "
            f"{ATTACK_MODEL_VERSION.split('.')[0]}.x; refit the attack."
        )
    name = card.get("attack")
    if name not in ATTACKS:
        raise InvalidParameterError(f"{js} holds attack {name!r}, unknown here; known attacks are {sorted(ATTACKS)}.")
    try:
        tensors = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to load is one clear sentence
        raise InvalidParameterError(f"{pt} could not be loaded safely ({type(err).__name__}: {err}).") from None
    attack = ATTACKS[name](**card["params"])
    attack.parameters_ = list(card["parameters"])
    attack.shapes_ = {k: tuple(v) for k, v in card["shapes"].items()}
    attack._load_state(tensors, card["state"])
    attack.card_ = card
    attack.fitted_ = True
    return attack


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj
