"""The audit grid: every setting recorded, shadow-trained, attacked and summarised in one results file.

A grid is a list of settings (an FL algorithm and the defenses it runs) on a
private corpus, with shadow corpora the attacker owns. For each setting the
audit records the target run, records shadow runs of the same setup (with the
target's defense: the defense-aware attacker; and, where the setting has a
defense, without it: the undefended attacker), fits every attack that applies,
and scores it per layer and for several numbers of averaged updates. Each step
is a task keyed by the hash of its inputs (:mod:`fedaudit.audit.cache`), so an
interrupted audit resumes and a changed setting recomputes only what depends
on it. Tasks run in a local process pool or as Ray tasks
(:mod:`fedaudit.audit.executors`), with the same results either way.
"""

from __future__ import annotations

import math
import os
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedaudit.audit.cache import ResultCache, content_key
from fedaudit.config import FLConfig, clients_per_round, default_architecture
from fedaudit.exceptions import InvalidParameterError, OutputExistsError

__all__ = [
    "AUDIT_SCHEMA",
    "AUDIT_SCHEMA_VERSION",
    "AuditConfig",
    "AuditPlan",
    "Setting",
    "Task",
    "load_audit_config",
    "plan_audit",
    "run_audit",
]

AUDIT_SCHEMA = "fedaudit.audit_results"
AUDIT_SCHEMA_VERSION = "1.1.0"

#: Defenses whose recorded updates are what a key holder decrypts, not what the server sees.
_KEY_HOLDER_VIEW = frozenset({"sefl"})
#: Attacks fitted on shadow recordings (the others need public features only).
_SHADOW_ATTACKS = frozenset({"stats", "cnn", "label-only"})


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One cell of the grid: an FL algorithm, its defenses and their options.

    Parameters
    ----------
    id
        Short unique name (``"fedsgd-udp-eps10"``); used in file names and the report.
    algorithm
        ``"fedsgd"`` or ``"fedavg"``.
    defenses
        Registry names of :data:`fedaudit.defenses.DEFENSES`, applied in order.
    options
        Defense options as on the command line (``target_epsilon``, ``clip``, ``key_bits``, ...).
    dropout
        Dropout of the first hidden layer (``None``: the publication's 0.2).
    label
        Human-readable name (default: built from the rest).
    """

    id: str
    algorithm: str = "fedsgd"
    defenses: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    dropout: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not all(c.isalnum() or c in "-_." for c in self.id):
            raise InvalidParameterError(
                f"A setting id must be letters, digits, '-', '_' or '.'; got {self.id!r}."
            )

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        algo = {"fedsgd": "FedSGD", "fedavg": "FedAvg"}.get(self.algorithm, self.algorithm)
        parts = [algo]
        for name in self.defenses:
            eps = self.options.get("target_epsilon") if name in ("udp", "dp-sgd") else None
            eps = self.options.get("ldp_epsilon", 10.0) if name == "ldp" else eps
            parts.append(f"{name.upper()} (eps {eps:g})" if eps is not None else name.upper())
        if self.dropout is not None:
            parts.append(f"dropout {self.dropout:g}")
        if len(parts) == 1:
            parts.append("no defense")
        return ", ".join(parts[:1]) + (", " + " + ".join(parts[1:]) if len(parts) > 1 else "")


def _default_settings() -> tuple[Setting, ...]:
    return (
        Setting(id="fedsgd"),
        Setting(id="fedavg", algorithm="fedavg"),
        Setting(id="fedsgd-udp-eps10", defenses=("udp",), options={"target_epsilon": 10.0, "clip": 1.0}),
        Setting(id="fedsgd-udp-eps1000", defenses=("udp",), options={"target_epsilon": 1000.0, "clip": 1.0}),
        Setting(id="fedsgd-dpsgd-eps10", defenses=("dp-sgd",), options={"target_epsilon": 10.0}),
        Setting(id="fedsgd-ldp-eps10", defenses=("ldp",), options={"ldp_epsilon": 10.0, "clip": 1.0}),
        Setting(id="fedsgd-prune80", defenses=("prune",), options={"prune_percent": 80.0}),
        Setting(id="fedsgd-sefl", defenses=("sefl",), options={"key_bits": 2048, "prune_percent": 80.0}),
        Setting(id="fedsgd-dropout0.6", dropout=0.6),
    )


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Everything an audit grid needs; read from TOML by :func:`load_audit_config` (see ``docs/audit.md``)."""

    private_corpora: tuple[str, ...] = ("demo-private",)
    shadow_corpora: tuple[str, ...] = ("demo-shadow",)
    public_corpora: tuple[str, ...] = ("demo-shadow",)
    data_roots: Mapping[str, str] = field(default_factory=dict)
    feature_set: str = "emobase"
    #: Client model of every run (:data:`fedaudit.models.MODELS`), and its hidden widths (``None``: the model's
    #: default architecture); shadow runs mirror them.
    model: str = "mlp"
    hidden: tuple[int, ...] | None = None
    rounds: int = 200
    client_fraction: float = 0.1
    normalization: str = "global"
    #: Clients per training speaker (each holding a disjoint share of its utterances) and speaker folds of the
    #: target runs: a corpus of few speakers needs more than one client per speaker (docs/corpora.md).
    clients_per_speaker: int = 1
    n_folds: int = 5
    seed: int = 0
    shadow_runs: int = 3
    #: Speaker folds of the shadow runs (``None``: the target's, capped by the shadow speakers;
    #: :func:`fedaudit.audit.shadow.shadow_folds`).
    shadow_folds: int | None = None
    attacks: tuple[str, ...] = ("stats", "inversion")
    n_updates: tuple[int | str, ...] = (1, 5, "all")
    repeats: int = 10
    undefended_attacker: bool = True
    dtype: str = "float16"
    cnn: Mapping[str, Any] = field(default_factory=dict)
    #: Refits of each shadow-trained attack on gender-free relabellings of the shadow speakers (the
    #: permutation test; 0 skips it). Off by default: each refit costs one attack fit (docs/audit.md).
    permutations: int = 0
    #: Reconstruction methods run on every target recording (``fedaudit invert``; docs/inversion.md), e.g.
    #: ``["labels", "analytic"]``; none by default. Methods that need the round's global weights do not apply
    #: (audit recordings do not store them).
    inversion: tuple[str, ...] = ()
    #: Updates reconstructed per client by each inversion method, spread across the run.
    inversion_updates: int = 2
    settings: tuple[Setting, ...] = field(default_factory=_default_settings)

    def __post_init__(self) -> None:
        ids = [s.id for s in self.settings]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InvalidParameterError(f"Setting ids must be unique; {dupes} appear more than once.")
        if not self.settings:
            raise InvalidParameterError("The audit has no settings; add at least one [[settings]] table.")
        for name in ("rounds", "shadow_runs", "repeats", "inversion_updates", "clients_per_speaker"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidParameterError(f"The audit's {name!r} must be an integer >= 1. Got {value!r}.")
        if not isinstance(self.permutations, int) or isinstance(self.permutations, bool) or self.permutations < 0:
            raise InvalidParameterError(
                f"The audit's 'permutations' must be an integer >= 0 (20 or more to reach p < 0.05; 0 skips the "
                f"permutation test). Got {self.permutations!r}."
            )
        if isinstance(self.n_folds, bool) or not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise InvalidParameterError(f"The audit's 'n_folds' must be an integer >= 2. Got {self.n_folds!r}.")
        if self.shadow_folds is not None and (isinstance(self.shadow_folds, bool) or not isinstance(
                self.shadow_folds, int) or self.shadow_folds < 2):
            raise InvalidParameterError(
                f"The audit's 'shadow_folds' must be an integer >= 2 (or absent: chosen from the shadow speakers). "
                f"Got {self.shadow_folds!r}."
            )
        if not isinstance(self.model, str) or not self.model:
            raise InvalidParameterError(f"The audit's 'model' must be a model name (e.g. 'mlp'). Got {self.model!r}.")
        if self.dtype not in ("float32", "float16"):
            raise InvalidParameterError(f"The audit's 'dtype' must be 'float32' or 'float16'. Got {self.dtype!r}.")
        for n in self.n_updates:
            if n != "all" and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
                raise InvalidParameterError(f"The audit's 'n_updates' takes integers >= 1 or 'all'. Got {n!r}.")

    def fl_config(self, setting: Setting) -> FLConfig:
        """The target run of ``setting``."""
        hidden = None if self.hidden is None else tuple(self.hidden)
        dropout = None  # the model's default rates; a setting's dropout replaces the first layer's
        try:
            if setting.dropout is not None:
                rates = default_architecture(self.model, hidden)[1]
                dropout = (float(setting.dropout), *rates[1:])
            return FLConfig(algorithm=setting.algorithm, rounds=self.rounds, client_fraction=self.client_fraction,
                            normalization=self.normalization, model=self.model, hidden=hidden, dropout=dropout,
                            clients_per_speaker=self.clients_per_speaker, n_folds=self.n_folds,
                            seed=self.seed)  # type: ignore[arg-type]
        except InvalidParameterError as err:
            raise InvalidParameterError(f"Setting {setting.id!r}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # keys added after the first schema are left out at their defaults, so older audits keep their hash
        if not self.inversion:
            del out["inversion"], out["inversion_updates"]
        for key, default in (("model", "mlp"), ("hidden", None), ("shadow_folds", None), ("clients_per_speaker", 1),
                             ("n_folds", 5)):
            if out[key] == default:
                del out[key]
        out["settings"] = [{k: v for k, v in asdict(s).items() if v not in (None, (), {})} | {"id": s.id}
                           for s in self.settings]
        return out


def load_audit_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> AuditConfig:
    """Read an audit grid from TOML (top-level keys of :class:`AuditConfig`, ``[[settings]]`` tables).

    ``overrides`` (command-line options) replace top-level keys. Without a
    file, the default demo grid.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InvalidParameterError(f"No audit configuration at {path}; check the path (see examples/).")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise InvalidParameterError(f"{path} is not valid TOML ({err}).") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(AuditConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidParameterError(f"Unknown audit keys {unknown}; the keys are {sorted(known)} (docs/audit.md).")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "settings":
            kwargs[key] = tuple(_setting(s, i) for i, s in enumerate(value))
        elif key in ("private_corpora", "shadow_corpora", "public_corpora", "attacks", "n_updates", "inversion",
                     "hidden"):
            kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        else:
            kwargs[key] = value
    return AuditConfig(**kwargs)


def _setting(raw: Any, position: int) -> Setting:
    if not isinstance(raw, Mapping):
        raise InvalidParameterError(f"settings[{position}] must be a table; got {raw!r}.")
    known = {f.name for f in fields(Setting)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidParameterError(f"Unknown keys {unknown} in settings[{position}]; the keys are {sorted(known)}.")
    if "id" not in raw:
        raise InvalidParameterError(f"settings[{position}] needs an 'id'.")
    kwargs = dict(raw)
    kwargs["defenses"] = tuple(kwargs.get("defenses", ()))
    kwargs["options"] = dict(kwargs.get("options", {}))
    return Setting(**kwargs)


# -- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Task:
    """One unit of work: a recording (target or shadow) or an attack on a target."""

    kind: str  # "recording" or "attack"
    key: str
    spec: dict[str, Any]
    label: str
    deps: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AuditPlan:
    config: AuditConfig
    recordings: list[Task]
    attacks: list[Task]
    cells: list[dict[str, Any]]  # per setting: its target key and its attack keys

    @property
    def tasks(self) -> list[Task]:
        return [*self.recordings, *self.attacks]


def _defense_options(setting: Setting) -> dict[str, Any]:
    return dict(setting.options)


def _shadow_options(setting: Setting) -> dict[str, Any]:
    """A shadow run's defense options: the target's, but secure aggregation skips the real cryptography.

    The attacker trains on the key holder's view, which the exact plaintext emulation of the
    packed sums gives (checked equal to the decrypted sums in every encrypted round); only the
    target's run needs the encryption, to measure its cost.
    """
    options = dict(setting.options)
    if "sefl" in setting.defenses:
        options["encrypted_rounds"] = 0
    return options


def _recording_spec(config: AuditConfig, fl: FLConfig, *, role: str, corpora: Sequence[str],
                    defenses: Sequence[str], options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "role": role, "corpora": list(corpora), "roots": [config.data_roots[c] for c in corpora if c in config.data_roots],
        "feature_set": config.feature_set, "config": fl.to_dict(), "defenses": list(defenses),
        "options": dict(options) if defenses else {}, "dtype": config.dtype,
    }


def plan_audit(config: AuditConfig) -> AuditPlan:
    """Every task of the grid, deduplicated by content key (shared shadow runs are computed once)."""
    from fedaudit.audit.shadow import shadow_config

    _check_model(config)
    _check_inversion(config)
    folds: dict[int, int] = {}  # target folds -> shadow folds
    recordings: dict[str, Task] = {}
    attacks: dict[str, Task] = {}
    cells = []
    for setting in config.settings:
        fl = config.fl_config(setting)
        if setting.defenses:  # a bad option is a sentence now, not a failed task an hour in
            from fedaudit.defenses import defenses_from_options

            try:
                defenses_from_options(list(setting.defenses), _defense_options(setting))
            except InvalidParameterError as err:
                raise InvalidParameterError(f"Setting {setting.id!r}: {err}") from None
        target = _recording_spec(config, fl, role="target", corpora=config.private_corpora,
                                 defenses=setting.defenses, options=_defense_options(setting))
        target_key = content_key(target)
        recordings.setdefault(target_key, Task(kind="recording", key=target_key, spec=target,
                                               label=f"{setting.id}: target run"))
        attackers = [("defense-aware", tuple(setting.defenses))]
        if setting.defenses and config.undefended_attacker:
            attackers.append(("undefended", ()))
        cell_attacks = []
        for name in config.attacks:
            if name in _SHADOW_ATTACKS:
                for attacker, shadow_defenses in attackers:
                    shadow_keys = []
                    if fl.n_folds not in folds:
                        folds[fl.n_folds] = _shadow_folds(config, fl.n_folds)
                    for k in range(config.shadow_runs):
                        cfg = shadow_config(fl.to_dict(), run=k, seed=config.seed + 1000, n_folds=folds[fl.n_folds])
                        spec = _recording_spec(config, cfg, role="shadow", corpora=config.shadow_corpora,
                                               defenses=shadow_defenses, options=_shadow_options(setting))
                        key = content_key(spec)
                        recordings.setdefault(key, Task(
                            kind="recording", key=key, spec=spec,
                            label=f"{setting.id}: shadow run {k + 1}/{config.shadow_runs}"
                                  + (" (undefended)" if attacker == "undefended" else "")))
                        shadow_keys.append(key)
                    spec = {"attack": name, "attacker": attacker, "target": target_key, "shadows": shadow_keys,
                            "shadow_defenses": list(shadow_defenses), "n_updates": list(config.n_updates),
                            "repeats": config.repeats, "seed": config.seed,
                            "options": dict(config.cnn) if name == "cnn" else {}}
                    if config.permutations:
                        spec["permutations"] = config.permutations
                    key = content_key(spec)
                    attacks.setdefault(key, Task(kind="attack", key=key, spec=spec, deps=(target_key, *shadow_keys),
                                                 label=f"{setting.id}: {name} attack ({attacker})"))
                    cell_attacks.append(key)
            else:
                spec = {"attack": name, "attacker": "public data", "target": target_key, "shadows": [],
                        "shadow_defenses": [], "public_corpora": list(config.public_corpora),
                        "roots": [config.data_roots[c] for c in config.public_corpora if c in config.data_roots],
                        "feature_set": config.feature_set, "n_updates": list(config.n_updates),
                        "repeats": config.repeats, "seed": config.seed, "options": {}}
                key = content_key(spec)
                attacks.setdefault(key, Task(kind="attack", key=key, spec=spec, deps=(target_key,),
                                             label=f"{setting.id}: {name} attack"))
                cell_attacks.append(key)
        cells.append({"setting": setting, "target": target_key, "attacks": cell_attacks})
    return AuditPlan(config=config, recordings=list(recordings.values()), attacks=list(attacks.values()),
                     cells=cells)


def _check_model(config: AuditConfig) -> None:
    """Refuse, at plan time, a feature set or model that is unknown or that do not fit each other."""
    from fedaudit.data.features import FEATURE_SETS
    from fedaudit.models import check_model_input

    if config.feature_set not in FEATURE_SETS:
        raise InvalidParameterError(
            f"Unknown feature set {config.feature_set!r} in the audit's 'feature_set'; choose from {sorted(FEATURE_SETS)}."
        )
    check_model_input(config.model, frame_level=FEATURE_SETS[config.feature_set].frame_level,
                      feature_set=config.feature_set)


def _shadow_folds(config: AuditConfig, target_folds: int) -> int:
    """Speaker folds of the grid's shadow runs: chosen from the shadow speakers unless ``shadow_folds`` is set."""
    from fedaudit.audit.shadow import shadow_folds
    from fedaudit.data.sources import count_speakers

    roots = [config.data_roots[c] for c in config.shadow_corpora if c in config.data_roots]
    n_speakers = count_speakers(list(config.shadow_corpora), roots=roots)
    try:
        return shadow_folds(target_folds, n_speakers, n_folds=config.shadow_folds)
    except InvalidParameterError as err:
        raise InvalidParameterError(f"The audit's shadow corpora {list(config.shadow_corpora)}: {err}") from None


def _check_inversion(config: AuditConfig) -> None:
    """Refuse, at plan time, an inversion method that is unknown or cannot read an audit recording."""
    if not config.inversion:
        return
    from fedaudit.audit.invert import load_methods

    methods = load_methods()
    for name in config.inversion:
        if name not in methods:
            raise InvalidParameterError(
                f"Unknown inversion method {name!r} in the audit's 'inversion'; choose from {sorted(methods)}."
            )
        if methods[name].needs_globals:
            usable = sorted(n for n, c in methods.items() if not c.needs_globals)
            raise InvalidParameterError(
                f"The inversion method {name!r} needs the rounds' global weights, which audit recordings do not "
                f"store; choose from {usable}, or run `fedaudit invert` on a recording made with --store-globals."
            )


def _run_inversions(plan: AuditPlan, done: Mapping[str, dict[str, Any]], cache: ResultCache,
                    progress: ProgressFn | None) -> dict[tuple[str, str], dict[str, Any]]:
    """Each inversion method on each target recording, in this process, cached like the tasks."""
    cfg = plan.config
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if not cfg.inversion:
        return out
    from fedaudit.audit.invert import invert_recording, select_updates
    from fedaudit.record import UpdateStore
    from fedaudit.settings import Settings

    emit = progress or (lambda event, data: None)
    roots = [cfg.data_roots[c] for c in cfg.private_corpora if c in cfg.data_roots]
    public_roots = [cfg.data_roots[c] for c in cfg.public_corpora if c in cfg.data_roots]
    for cell in plan.cells:
        target = cell["target"]
        for name in cfg.inversion:
            key = content_key({"inversion": name, "target": target, "updates_per_client": cfg.inversion_updates,
                               "public_corpora": list(cfg.public_corpora), "seed": cfg.seed})
            if (target, name) in out:
                continue
            cached = cache.get("inversions", key)
            if cached is None:
                label = f"{cell['setting'].id}: {name} inversion"
                with UpdateStore.open(done[target]["path"], verify=False) as store:
                    total = len(select_updates(store, per_client=cfg.inversion_updates, seed=cfg.seed))
                emit("start", {"key": key, "label": label, "total": total})

                def tick(completed: int, total: int, key: str = key) -> None:
                    emit("advance", {"key": key, "completed": completed, "total": total})

                path = cache.path("inversions", key, ".h5")
                path.parent.mkdir(parents=True, exist_ok=True)
                result = invert_recording(
                    done[target]["path"], method=name, max_updates_per_client=cfg.inversion_updates, seed=cfg.seed,
                    roots=roots, cache_dir=Settings().cache_dir, public_corpora=list(cfg.public_corpora),
                    public_roots=public_roots, out=path, force=True, progress=tick,
                )
                cached = cache.put("inversions", key, result.summary())
            out[(target, name)] = cached
    return out


def estimate_bytes(plan: AuditPlan) -> dict[str, int]:
    """Disk an audit will write for its recordings (update arrays only; metadata is small)."""
    from fedaudit.data.clients import split_clients
    from fedaudit.data.sources import load_features
    from fedaudit.models import build_model

    cfg = plan.config
    itemsize = 2 if cfg.dtype == "float16" else 4
    tables: dict[tuple[str, ...], Any] = {}
    n_params: dict[tuple[Any, ...], int] = {}
    total = 0
    for task in plan.recordings:
        corpora = tuple(task.spec["corpora"])
        fl = FLConfig.from_dict(task.spec["config"])
        if corpora not in tables:
            tables[corpora] = load_features(list(corpora), roots=task.spec["roots"], feature_set=cfg.feature_set)
        table = tables[corpora]
        split = split_clients(table, n_folds=fl.n_folds, fold=fl.fold, clients_per_speaker=fl.clients_per_speaker,
                              val_fraction=fl.val_fraction, seed=fl.seed)
        arch = (fl.model, table.n_features, fl.hidden, fl.n_classes, table.frame_shape)
        if arch not in n_params:  # the recorded model's own parameter count, whatever its layers
            model = build_model(fl.model, table.n_features, hidden=fl.hidden, n_classes=fl.n_classes,
                                frame_shape=table.frame_shape)
            n_params[arch] = sum(p.numel() for p in model.parameters())
        total += fl.rounds * clients_per_round(fl.client_fraction, len(split.clients)) * n_params[arch] * itemsize
    return {"recordings": len(plan.recordings), "bytes": total}


# -- running ------------------------------------------------------------------------------------
ProgressFn = Callable[[str, Mapping[str, Any]], None]


def run_audit(
    config: AuditConfig,
    out_dir: str | os.PathLike[str],
    *,
    executor: str = "local",
    jobs: int = 2,
    address: str | None = None,
    progress: ProgressFn | None = None,
    command: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the audit grid and write ``<out_dir>/results.json``.

    Parameters
    ----------
    config
        The grid.
    out_dir
        Results folder: ``results.json`` and ``cache/`` (recordings, attack results).
        An existing folder is resumed; finished tasks are not recomputed.
    executor
        ``"local"`` (a process pool of ``jobs`` workers) or ``"ray"`` (Ray tasks,
        on a local instance or the cluster at ``address``).
    progress
        Called with an event name and a mapping (see :mod:`fedaudit.audit.executors`).
    command
        The command line that started the audit, recorded for the report.
    force
        Replace an existing ``results.json`` of another configuration.

    Returns
    -------
    dict
        The results (schema :data:`AUDIT_SCHEMA` version :data:`AUDIT_SCHEMA_VERSION`).
    """
    from fedaudit.audit.executors import run_tasks
    from fedaudit.record import library_versions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_hash = content_key(config.to_dict())
    results_path = out / "results.json"
    if results_path.exists() and not force:
        import json

        try:
            previous = json.loads(results_path.read_text()).get("config_hash")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            previous = None
        if previous != config_hash:
            raise OutputExistsError(
                f"{results_path} already exists and holds the results of another audit configuration."
            )
    plan = plan_audit(config)
    cache = ResultCache(out / "cache")
    t0 = time.perf_counter()
    done = run_tasks(plan, cache, executor=executor, jobs=jobs, address=address, progress=progress)
    inversions = _run_inversions(plan, done, cache, progress)
    results = _assemble(plan, done, config_hash=config_hash, versions=library_versions(),
                        wall_seconds=time.perf_counter() - t0, out=out, command=command, inversions=inversions)
    tmp = results_path.with_suffix(".json.tmp")
    import json

    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=_json_safe))
    os.replace(tmp, results_path)
    return results


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _assemble(plan: AuditPlan, done: Mapping[str, dict[str, Any]], *, config_hash: str, versions: Mapping[str, str],
              wall_seconds: float, out: Path, command: str | None,
              inversions: Mapping[tuple[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    cfg = plan.config
    synthetic = any(c.startswith("demo-") for c in (*cfg.private_corpora, *cfg.shadow_corpora))
    cells = []
    for cell in plan.cells:
        setting: Setting = cell["setting"]
        target = done[cell["target"]]
        warnings = []
        if target["n_clients"] < 10:
            warnings.append(
                f"Only {target['n_clients']} clients: each client moves the ASR by "
                f"{100 / target['n_clients']:.0f} points and the interval is wide."
            )
        per_speaker = int(plan.config.clients_per_speaker)
        if per_speaker > 1:
            warnings.append(
                f"{target['n_clients']} clients from {target['n_clients'] // per_speaker} training speakers "
                f"({per_speaker} per speaker): clients of one speaker share its voice and gender, so the interval, "
                "which counts clients, is too narrow; judge the ASR by the number of speakers."
            )
        if target["clients_per_round"] <= 1:
            warnings.append("One client per round: each global step is one client's update, and secure "
                            "aggregation hides nothing from whoever decrypts the aggregate.")
        attacks = []
        for key in cell["attacks"]:
            entry = dict(done[key])
            entry.setdefault("warnings", [])
            if entry["attacker"] == "undefended" and setting.defenses:
                entry["warnings"].append(
                    f"Shadow runs without the target's defense ({', '.join(setting.defenses)}): the attacker "
                    "learned from undefended updates, so this figure may understate the leakage."
                )
            attacks.append(entry)
        view = "key holder" if _KEY_HOLDER_VIEW & set(setting.defenses) else "server"
        if view == "key holder":
            warnings.append("Secure aggregation: the server sees ciphertexts only; these figures are what a "
                            "holder of the private key (any client) sees after decryption.")
        cells.append(_nan_to_none({
            "id": setting.id, "label": setting.title, "algorithm": setting.algorithm,
            "defenses": list(setting.defenses), "defense_settings": target["defense_settings"],
            "view": view, "n_clients": target["n_clients"], "rounds": target["rounds"],
            "utility": target["utility"], "privacy": target["privacy"], "cost": target["cost"],
            "recording": str(Path(target["path"]).relative_to(out)) if target.get("path") else None,
            "attacks": attacks, "warnings": warnings,
            **({"inversions": [(inversions or {})[(cell["target"], name)] for name in cfg.inversion]}
               if cfg.inversion else {}),
        }))
    commands = [command or "fedaudit audit --out " + str(out), f"fedaudit report {out} --out {out / 'report'}"]
    return {
        "schema": AUDIT_SCHEMA, "schema_version": AUDIT_SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": _nan_to_none(cfg.to_dict()), "config_hash": config_hash, "versions": dict(versions),
        "setup": {
            "private_corpora": list(cfg.private_corpora), "shadow_corpora": list(cfg.shadow_corpora),
            "public_corpora": list(cfg.public_corpora), "synthetic": synthetic, "feature_set": cfg.feature_set,
            "n_features": next(iter(done.values())).get("n_features"), "rounds": cfg.rounds,
            "shadow_runs": cfg.shadow_runs, "seed": cfg.seed, "normalization": cfg.normalization,
            "model": cfg.model, "hidden": list(FLConfig.from_dict(plan.recordings[0].spec["config"]).hidden or ()),
            "shadow_folds": sorted({int(t.spec["config"]["n_folds"]) for t in plan.recordings
                                    if t.spec["role"] == "shadow"}),
        },
        "commands": commands, "wall_seconds": wall_seconds, "cells": cells,
    }
