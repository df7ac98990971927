"""The attack interface, the attack registry, and saving fitted attacks without pickles.

An attack reads recordings (:class:`~fedaudit.record.UpdateStore`) and public
acoustic features (:class:`~fedaudit.data.FeatureTable`) only: it never imports
the simulator, so it works on runs recorded from any framework. It may read a
shadow store's ``ground_truth`` to *fit* (the attacker owns those) and
:meth:`Attack.score` reads the target's to *score*; it never reads the target's
ground truth to predict.

Every attack takes the same input to :meth:`Attack.fit`, an
:class:`AttackerKnowledge`, and declares what it needs from it, and what it
can do, as class attributes (``needs_shadow``, ``needs_public``,
``per_layer``, ``layers_read``). Callers read those attributes; they never
branch on an attack's name.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import torch

from fedaudit._version import __version__
from fedaudit.exceptions import FedAuditError, InvalidParameterError, OutputExistsError, RecordingError
from fedaudit.types import GENDERS

if TYPE_CHECKING:
    from fedaudit.data.table import FeatureTable
    from fedaudit.metrics.asr import AttackResult
    from fedaudit.record.reader import UpdateStore

__all__ = [
    "ATTACKS",
    "ATTACK_MODEL_VERSION",
    "Attack",
    "AttackerKnowledge",
    "FUSED",
    "NotFittedError",
    "ShapeMismatchError",
    "check_is_fitted",
    "fusion_weights",
    "gender_labels",
    "layer_of",
    "layer_parameters",
    "load_attack",
    "register_attack",
    "resolve_layers",
    "shadow_hash",
]

ATTACK_MODEL_VERSION = "1.0.0"

#: Registry key -> attack class.
ATTACKS: dict[str, type[Attack]] = {}

#: Attributes every attack's ``_fit`` sets (the base sets ``fusion_weights_`` and ``fitted_``).
_FITTED = ("parameters_", "shapes_", "layers_", "fit_info_")

#: Key of the fused prediction (all layers together) wherever predictions are keyed by layer.
FUSED = "fused"


class NotFittedError(FedAuditError, ValueError, AttributeError):
    """An attack was used before :meth:`Attack.fit`."""

    exit_code = 2


class ShapeMismatchError(FedAuditError, ValueError):
    """A recording's architecture differs from the one an attack was fitted on."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True, eq=False)
class AttackerKnowledge:
    """What an attacker knows and may fit on: the one input of every :meth:`Attack.fit`.

    Parameters
    ----------
    shadows
        Shadow recordings, whose ground truth (gender, speaker) the attacker
        owns: it ran them itself (``fedaudit shadow``). A single store is
        taken as a one-element sequence.
    public
        Public acoustic features with known genders (not recordings).
    target_config
        The target run's configuration as recorded in its ``/run/config``
        (normalisation, feature set, architecture, ...): the threat model
        assumes the attacker knows the target's setup, never its clients' data.
    target_shapes
        The target's parameter shapes in model order (``{"conv1.weight": (32, 13, 5), ...}``,
        from its ``/run/architecture``): the attacker knows the architecture.

    Examples
    --------
    >>> AttackerKnowledge().shadows
    ()
    """

    shadows: Sequence[UpdateStore] = ()
    public: FeatureTable | None = None
    target_config: Mapping[str, Any] | None = None
    target_shapes: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self) -> None:
        from fedaudit.record.reader import UpdateStore

        shadows = self.shadows
        if isinstance(shadows, (str, os.PathLike)):
            raise InvalidParameterError(
                f"AttackerKnowledge.shadows takes opened recordings (UpdateStore), not a path; got {shadows!r}."
            )
        shadows = (shadows,) if isinstance(shadows, UpdateStore) else tuple(shadows)
        bad = [type(s).__name__ for s in shadows if not isinstance(s, UpdateStore)]
        if bad:
            raise InvalidParameterError(
                f"AttackerKnowledge.shadows takes opened recordings (UpdateStore); got {bad}. "
                "Open a path with UpdateStore.open(path)."
            )
        object.__setattr__(self, "shadows", shadows)

    @property
    def target_normalization(self) -> str:
        """The target's input normalisation (``"global"`` when its configuration is not known)."""
        return str((self.target_config or {}).get("normalization", "global"))

    @property
    def target_layers(self) -> list[str] | None:
        """The target's layer names, input first, when its shapes are known."""
        if self.target_shapes is None:
            return None
        return list(dict.fromkeys(layer_of(p) for p in self.target_shapes))

    @property
    def target_feature_set(self) -> str | None:
        """The target's acoustic feature set, when its configuration names it."""
        value = (self.target_config or {}).get("data", {}).get("feature_set")
        return None if value is None else str(value)


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator adding an attack to :data:`ATTACKS` under ``cls.name``.

    Raises
    ------
    InvalidParameterError
        If another class is registered under the same name, or a class
        attribute has a value outside its set.
    """
    if cls.layers_read not in ("input", "all"):
        raise InvalidParameterError(
            f"{cls.__name__}.layers_read must be 'input' or 'all'. Got {cls.layers_read!r} instead."
        )
    known = ATTACKS.get(cls.name)
    if known is not None and known is not cls:
        raise InvalidParameterError(
            f"The attack name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}; choose another name."
        )
    ATTACKS[cls.name] = cls
    return cls


def check_is_fitted(attack: Attack) -> None:
    """Raise :class:`NotFittedError` unless ``attack`` was fitted or loaded."""
    if not getattr(attack, "fitted_", False):
        raise NotFittedError(
            f"This {type(attack).__name__} is not fitted yet; call fit() or load a fitted attack model first."
        )


def layer_of(parameter: str) -> str:
    """The layer a parameter belongs to: ``"fc1.weight"`` -> ``"fc1"``."""
    return parameter.rsplit(".", 1)[0]


def layer_parameters(parameters: Sequence[str], layer: str) -> list[str]:
    """The parameters of one layer, in model order: ``(["fc1.weight", "fc1.bias", "fc2.weight"], "fc1")`` -> the first two.

    A layer is every parameter whose name before the last ``"."`` is the layer's
    name: ``fc1.weight`` and ``fc1.bias``, ``conv1.weight`` and ``conv1.bias``,
    or the four tensors of an LSTM (``lstm1.weight_ih_l0``, ``lstm1.weight_hh_l0``,
    ``lstm1.bias_ih_l0``, ``lstm1.bias_hh_l0``).

    Raises
    ------
    InvalidParameterError
        If no parameter belongs to ``layer``.
    """
    found = [p for p in parameters if layer_of(p) == layer]
    if not found:
        layers = list(dict.fromkeys(layer_of(p) for p in parameters))
        raise InvalidParameterError(f"Unknown layer {layer!r}; this model has layers {layers}.")
    return found


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


def fusion_weights(layers: Sequence[str], shapes: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Weight of each layer proportional to the number of values of its update (all its parameters).

    The fusion rule of Feng et al. (Interspeech 2022): a layer's vote counts as
    much as its update is large.

    Examples
    --------
    >>> fusion_weights(["fc1", "fc2"], {"fc1.weight": (3, 2), "fc1.bias": (3,), "fc2.weight": (1, 3)})
    {'fc1': 0.75, 'fc2': 0.25}
    """
    sizes = {layer: sum(int(math.prod(s)) for p, s in shapes.items() if layer_of(p) == layer) for layer in layers}
    total = sum(sizes.values())
    if total == 0:
        raise InvalidParameterError(f"Layers {list(layers)} have no parameters in {sorted(shapes)}.")
    return {layer: sizes[layer] / total for layer in layers}


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

    A subclass sets ``name`` and the class attributes below, takes its
    hyper-parameters as keyword arguments stored unchanged in ``__init__``, and
    implements :meth:`_fit`, :meth:`_state` and :meth:`_load_state`, plus
    :meth:`_layer_proba` (when ``per_layer``) or :meth:`_predict_proba`
    (otherwise). The base class checks the fit input, fuses per-layer
    predictions, restricts to layers, scores, saves and loads.

    The columns of every probability array follow :data:`~fedaudit.types.GENDERS`:
    column 0 is ``"F"``, column 1 ``"M"``.

    Attributes
    ----------
    name : str
        Registry key (``"stats"``).
    needs_shadow : bool
        :meth:`fit` reads ``AttackerKnowledge.shadows`` (shadow recordings).
    needs_public : bool
        :meth:`fit` reads ``AttackerKnowledge.public`` (public features).
    per_layer : bool
        One prediction per layer, fused by update size (:meth:`fuse`);
        :meth:`restricted` keeps any subset of the fitted layers.
    layers_read : {"input", "all"}
        The layers the attack can read: the input layer only, or any.
    parameters_ : list of str
        Parameters (``"fc1.weight"``) the fitted attack reads from a recording.
    shapes_ : dict
        Their shapes (without the update axis), where the attack knows them.
    layers_ : list of str
        Layers the fitted attack reads, input first.
    fit_info_ : dict
        JSON-ready facts about the fit (validation scores, what it was fitted on).
    fusion_weights_ : dict of str to float
        Per-layer attacks only: each layer's weight in the fusion (sums to 1).
    """

    name: ClassVar[str] = "attack"
    needs_shadow: ClassVar[bool] = False
    needs_public: ClassVar[bool] = False
    per_layer: ClassVar[bool] = False
    layers_read: ClassVar[Literal["input", "all"]] = "all"

    # -- parameters --------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the hyper-parameters (the keyword arguments of ``__init__``)."""
        sig = inspect.signature(cls.__init__)
        return [k for k, p in sig.parameters.items() if k != "self" and p.kind is not p.VAR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters, as given to ``__init__`` (what a saved model's card records)."""
        return {k: getattr(self, k) for k in self.param_names()}

    # -- fitting -------------------------------------------------------------
    def fit(self, data: AttackerKnowledge) -> Self:
        """Fit on what the attacker knows.

        Parameters
        ----------
        data
            Shadow recordings, public features and the target's configuration;
            the attack reads what its class attributes say it needs.

        Returns
        -------
        Attack
            ``self``, fitted.

        Raises
        ------
        InvalidParameterError
            If ``data`` is not an :class:`AttackerKnowledge`, or lacks what the
            attack needs (shadow recordings, public features).
        """
        if not isinstance(data, AttackerKnowledge):
            raise InvalidParameterError(
                f"{type(self).__name__}.fit takes an AttackerKnowledge (shadow recordings, public features, the "
                f"target's configuration); got {type(data).__name__}. Wrap shadow recordings as "
                "AttackerKnowledge(shadows=[...])."
            )
        if self.needs_shadow and not data.shadows:
            raise InvalidParameterError(
                f"The {self.name} attack is fitted on shadow recordings: give --shadow FILE (see `fedaudit shadow`)."
            )
        if self.needs_public and data.public is None:
            raise InvalidParameterError(
                f"The {self.name} attack needs public features: give --public-corpus (e.g. demo-shadow)."
            )
        self.fitted_ = False  # a failed refit leaves no half-fitted attack behind
        self._fit(data)
        missing = [a for a in _FITTED if a not in vars(self)]
        if missing:
            raise TypeError(f"{type(self).__name__}._fit must set {missing}.")
        self._set_fusion_weights()
        self.fitted_ = True
        return self

    @abstractmethod
    def _fit(self, data: AttackerKnowledge) -> None:
        """Fit; set ``parameters_``, ``shapes_``, ``layers_``, ``fit_info_`` and the attack's own state."""

    def _set_fusion_weights(self) -> None:
        if self.per_layer:
            self.fusion_weights_ = fusion_weights(self.layers_, self.shapes_)

    # -- predicting ------------------------------------------------------------
    def required_parameters(self) -> list[str]:
        """Parameter names (``"fc1.weight"``) the fitted attack reads from a recording."""
        check_is_fitted(self)
        return list(self.parameters_)

    def predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``(n, 2)`` of ``("F", "M")`` for ``n`` updates given as parameter arrays."""
        check_is_fitted(self)
        self._check_updates(updates)
        if self.per_layer:
            return self.fuse(self._layer_proba(updates))
        return self._predict_proba(updates)

    def layer_proba(
        self, updates: Mapping[str, np.ndarray], layers: Sequence[str] | Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Probabilities ``(n, 2)`` of each layer alone, ``{layer: array}``.

        An attack that is not ``per_layer`` gives its one prediction, under the
        name of its layer when it reads one, else under ``"fused"``.

        Parameters
        ----------
        updates
            ``{"fc1.weight": (n, 256, 988), "fc1.bias": (n, 256), ...}``.
        layers
            Layers to score (names or 1-based numbers); ``None`` scores every fitted layer.
        """
        check_is_fitted(self)
        if layers is not None:
            return self.restricted(layers).layer_proba(updates)
        self._check_updates(updates)
        if self.per_layer:
            return self._layer_proba(updates)
        key = self.layers_[0] if len(self.layers_) == 1 else FUSED
        return {key: self._predict_proba(updates)}

    def _layer_proba(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-layer probabilities of checked updates (a ``per_layer`` attack implements this)."""
        raise NotImplementedError(f"{type(self).__name__} sets per_layer = True, so it must implement _layer_proba.")

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities of checked updates (an attack that is not ``per_layer`` implements this)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _predict_proba, or set per_layer = True and implement _layer_proba."
        )

    def fuse(self, layer_proba: Mapping[str, np.ndarray]) -> np.ndarray:
        """Average of per-layer probabilities over ``layers_``, weighted by ``fusion_weights_``."""
        check_is_fitted(self)
        if not self.per_layer:
            return np.asarray(next(iter(layer_proba.values())), dtype=np.float64)
        weights = np.array([self.fusion_weights_[layer] for layer in self.layers_], dtype=np.float64)
        stacked = np.stack([np.asarray(layer_proba[layer], dtype=np.float64) for layer in self.layers_])
        return np.tensordot(weights / weights.sum(), stacked, axes=1)

    def restricted(self, layers: Sequence[str] | Sequence[int]) -> Attack:
        """The same fitted attack reading ``layers`` only (names, or 1-based numbers of the fitted layers).

        A ``per_layer`` attack keeps any non-empty subset of its layers, sharing
        its fitted state (no copy), with the fusion weights recomputed over the
        kept layers. Any other attack accepts only the layers it reads.

        Raises
        ------
        InvalidParameterError
            On an unknown layer, no layer, or a layer the attack cannot read alone.
        """
        check_is_fitted(self)
        if not self.per_layer:
            chosen = self._own_layer_names(layers)
            if chosen != list(self.layers_):
                which = "the input layer only" if self.layers_read == "input" else f"layers {self.layers_} together"
                raise InvalidParameterError(f"The {self.name} attack reads {which}; got layers {chosen}.")
            return self
        chosen = resolve_layers(layers, self.layers_)
        if not chosen:
            raise InvalidParameterError("restricted() needs at least one layer.")
        other = copy.copy(self)
        if "layers" in self.param_names():
            other.layers = list(chosen)  # type: ignore[attr-defined]  # the restricted attack's own setting
        other.layers_ = list(chosen)
        other.parameters_ = [p for p in self.parameters_ if layer_of(p) in chosen]
        other.shapes_ = {p: s for p, s in self.shapes_.items() if layer_of(p) in chosen}
        other._set_fusion_weights()
        return other

    def _own_layer_names(self, layers: Sequence[str] | Sequence[int]) -> list[str | int]:
        """Layer names of a non-per-layer attack's request; numbers it cannot name are kept as numbers."""
        out: list[str | int] = []
        for layer in layers:
            if isinstance(layer, (int, np.integer)):
                if self.layers_read == "all":
                    out.extend(resolve_layers([int(layer)], self.layers_))
                else:
                    out.append(self.layers_[0] if int(layer) == 1 else int(layer))
            else:
                out.append(str(layer))
        return out

    # -- checking inputs -----------------------------------------------------------
    def _check_updates(self, updates: Mapping[str, np.ndarray]) -> None:
        """Raise if ``updates`` lack a parameter the attack reads or have another shape."""
        missing = [p for p in self.parameters_ if p not in updates]
        if missing:
            raise InvalidParameterError(f"{type(self).__name__} needs parameters {missing} that were not given.")
        for p, shape in self.shapes_.items():
            got = tuple(np.shape(updates[p])[1:])
            if got != tuple(shape):
                raise ShapeMismatchError(
                    f"Parameter {p} has shape {got} in the target but {tuple(shape)} in the attack model; "
                    "the attack was fitted on another architecture or feature set."
                )

    def check_store(self, store: UpdateStore) -> None:
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
            if p in self.shapes_ and shape != tuple(self.shapes_[p]):
                raise ShapeMismatchError(
                    f"{store.path} has {p} of shape {shape}, but the attack model was fitted on shape "
                    f"{tuple(self.shapes_[p])}; fit an attack on shadow runs of the same architecture and features."
                )

    # -- scoring -------------------------------------------------------------------
    def score(
        self, store: UpdateStore, *, repeats: int = 10, n_updates: int | str = 1, seed: int | None = None
    ) -> AttackResult:
        """Attack success rate on a recording with ground truth (:func:`fedaudit.metrics.attack_success`).

        Parameters
        ----------
        store
            The target recording; its ground truth is read to score only.
        repeats
            Draws per client.
        n_updates
            Updates averaged per draw: an integer, or ``"all"``.
        seed
            Seed of the draws; ``None`` takes the attack's own ``seed`` (else 0).
        """
        from fedaudit.metrics.asr import attack_success

        check_is_fitted(self)
        self.check_store(store)
        if "gender" not in store.ground_truth():
            raise InvalidParameterError(
                f"{store.path} holds no ground truth, so the attack cannot be scored on it; "
                "predict its clients' genders instead (fedaudit.metrics.predict_clients)."
            )
        if seed is None:
            seed = self.get_params().get("seed")
        return attack_success(
            self.predict_proba, store, self.required_parameters(), repeats=repeats, n_updates=n_updates,
            seed=0 if seed is None else int(seed),
        )

    # -- persistence -----------------------------------------------------------
    @abstractmethod
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The attack's own fitted state as (tensors, JSON-ready metadata)."""

    @abstractmethod
    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore the attack's own fitted state (``parameters_``, ``shapes_``, ``layers_``, ``fit_info_`` are set)."""

    def save(self, path: str | os.PathLike[str], *, card: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
        """Write ``<path>.pt`` (tensors only) and ``<path>.json`` (the card). Returns the .json path.

        Raises
        ------
        OutputExistsError
            If either file exists and ``overwrite`` is false.
        """
        check_is_fitted(self)
        stem = Path(path)
        if stem.suffix in (".pt", ".json"):
            stem = stem.with_suffix("")
        pt, js = stem.with_suffix(".pt"), stem.with_suffix(".json")
        if not overwrite and (pt.exists() or js.exists()):
            raise OutputExistsError(f"{js} already exists.")
        tensors, meta = self._state()
        body = {
            **_jsonable(dict(card or {})),
            "format": "fedaudit.attack_model",
            "format_version": ATTACK_MODEL_VERSION,
            "attack": self.name,
            "params": _jsonable(self.get_params()),
            "parameters": list(self.parameters_),
            "shapes": {k: list(v) for k, v in self.shapes_.items()},
            "layers": list(self.layers_),
            "fit_info": _jsonable(self.fit_info_),
            "state": _jsonable(meta),
            "fedaudit_version": __version__,
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidParameterError(f"{js} is not valid JSON ({err}); the attack model card is damaged.") from None
    if not isinstance(card, dict) or card.get("format") != "fedaudit.attack_model":
        raise InvalidParameterError(f"{js} is not a fedaudit attack model card.")
    major = str(card.get("format_version", "0")).split(".")[0]
    if major != ATTACK_MODEL_VERSION.split(".")[0]:
        raise InvalidParameterError(
            f"{js} uses attack model format {card.get('format_version')}, but this fedaudit reads "
            f"{ATTACK_MODEL_VERSION.split('.')[0]}.x; refit the attack."
        )
    _check_card(card, js)
    name = card["attack"]
    if name not in ATTACKS:
        raise InvalidParameterError(f"{js} holds attack {name!r}, unknown here; known attacks are {sorted(ATTACKS)}.")
    cls = ATTACKS[name]
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(card["params"]) - accepted)
    if unknown:
        raise InvalidParameterError(
            f"{js} gives the {name} attack parameters {unknown} it does not take (it takes {sorted(accepted)}); "
            "the card is damaged or from another fedaudit version: refit the attack."
        )
    try:
        tensors = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to load is one clear sentence
        raise InvalidParameterError(f"{pt} could not be loaded safely ({type(err).__name__}: {err}).") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise InvalidParameterError(f"{pt} does not hold a mapping of names to tensors; the attack model is damaged.")
    try:
        attack = cls(**card["params"])
        attack.parameters_ = list(card["parameters"])
        attack.shapes_ = {k: tuple(v) for k, v in card["shapes"].items()}
        # Cards written before "layers" was a key: the layers are those of the parameters read.
        attack.layers_ = list(card.get("layers") or dict.fromkeys(layer_of(p) for p in attack.parameters_))
        attack.fit_info_ = dict(card.get("fit_info") or {})
        attack._load_state(tensors, card["state"])
        attack._set_fusion_weights()
    except FedAuditError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
        raise InvalidParameterError(
            f"{js} and {pt.name} do not make a fitted {name} attack ({type(err).__name__}: {err}); "
            "the model is damaged or from another fedaudit version: refit the attack."
        ) from None
    attack.card_ = card
    attack.fitted_ = True
    return attack


def _check_card(card: Mapping[str, Any], js: Path) -> None:
    """Validate a card against the shipped JSON Schema before anything is built from it."""
    import jsonschema

    schema = json.loads((Path(__file__).with_name("attack_model.schema.json")).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(card), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "the top level"
        raise InvalidParameterError(f"{js} is not a valid attack model card: at {where}, {err.message}.")
    missing = [p for p in card["parameters"] if p not in card["shapes"]]
    if card["shapes"] and missing:  # an attack that checks input widths itself (inversion) saves no shapes
        raise InvalidParameterError(f"{js} reads parameters {missing} but gives no shape for them; the card is damaged.")


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
