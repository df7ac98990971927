"""The leakage report as frozen dataclasses, with a JSON form (:meth:`LeakageReport.to_dict`).

The JSON form is the source of truth: the renderers read only it, and CI pipelines gate on it.
Its schema is ``fedaudit/report/schemas/leakage_report.schema.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fedaudit.report.schema import REPORT_SCHEMA, REPORT_SCHEMA_VERSION, ReportError

__all__ = [
    "Baseline",
    "Caveat",
    "Cost",
    "Finding",
    "Inversion",
    "InversionMetric",
    "LeakageReport",
    "PlotInfo",
    "Privacy",
    "SEVERITIES",
    "Score",
    "SettingSummary",
    "Setup",
    "Severity",
    "ThreatModel",
    "Utility",
    "View",
]

Severity = Literal["high", "medium", "low", "none"]
#: Severities from worst to best.
SEVERITIES: tuple[Severity, ...] = ("high", "medium", "low", "none")


def _plain(value: Any) -> Any:
    """Tuples to lists and mappings to dicts, all the way down: the JSON form."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, kw_only=True)
class Score:
    """One attack success rate (ASR) with its 95% confidence interval, chance level and provenance.

    ``layer`` is a layer name (``"fc1"``) or ``"fused"``; ``n_updates`` is how many of a client's
    updates were averaged (``1``, ``5``, ``"all"``); ``group`` says which part of the results it
    comes from: ``"layers"`` (single-update, one layer or fused) or ``"n_updates"`` (the
    multiple-update attack, fused).
    """

    group: Literal["layers", "n_updates"]
    attack: str
    attacker: str
    layer: str
    n_updates: int | str
    asr: float
    ci_low: float
    ci_high: float
    chance: float
    auc: float | None
    uar: float | None
    n_clients: int
    repeats: int | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Score:
        n = data["n_updates"]
        return cls(
            group=data["group"], attack=str(data["attack"]), attacker=str(data["attacker"]), layer=str(data["layer"]),
            n_updates=n if n == "all" else int(n), asr=float(data["asr"]), ci_low=float(data["ci_low"]),
            ci_high=float(data["ci_high"]), chance=float(data["chance"]), auc=_opt(data.get("auc")),
            uar=_opt(data.get("uar")), n_clients=int(data["n_clients"]),
            repeats=None if data.get("repeats") is None else int(data["repeats"]),
        )


@dataclass(frozen=True, kw_only=True)
class Utility:
    """Speech emotion recognition utility of the trained global model."""

    test_uar: float | None
    test_acc: float | None
    val_uar: float | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Utility:
        return cls(test_uar=_opt(data.get("test_uar")), test_acc=_opt(data.get("test_acc")),
                   val_uar=_opt(data.get("val_uar")))


@dataclass(frozen=True, kw_only=True)
class Privacy:
    """The privacy one DP mechanism claims: epsilon over the clients (median, max) at ``delta``."""

    mechanism: str
    level: str
    delta: float
    epsilon_median: float | None
    epsilon_max: float | None
    epsilon_aggregate: float | None
    accountant: str | None
    noise_multiplier: float | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Privacy:
        return cls(
            mechanism=str(data["mechanism"]), level=str(data["level"]), delta=float(data["delta"]),
            epsilon_median=_opt(data.get("epsilon_median")), epsilon_max=_opt(data.get("epsilon_max")),
            epsilon_aggregate=_opt(data.get("epsilon_aggregate")), accountant=data.get("accountant"),
            noise_multiplier=_opt(data.get("noise_multiplier")),
        )


@dataclass(frozen=True, kw_only=True)
class Cost:
    """What a defense costs: bytes on the wire per round, encryption time per update, wall time."""

    bytes_per_round: float | None
    plain_bytes_per_round: float | None
    encrypt_seconds: float | None
    decrypt_seconds: float | None
    wall_seconds: float | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cost:
        keys = ("bytes_per_round", "plain_bytes_per_round", "encrypt_seconds", "decrypt_seconds", "wall_seconds")
        return cls(**{k: _opt(data.get(k)) for k in keys})


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """An attribute attack beside the label-only baseline of the same setting.

    ``score`` is the attack's best single-update result, ``baseline`` the label-only attack's
    (gender from the emotion-label mix each update reveals); ``above`` is ``score.asr -
    baseline.asr``. ``beyond`` is true when the attack's lower 95% bound lies above the
    baseline's upper bound: leakage the label mix alone does not explain.
    """

    attack: str
    attacker: str
    score: Score
    baseline: Score
    above: float
    beyond: bool

    #: ``"beyond the label mix"``, ``"attack at chance"`` (the attack's own lower bound does not clear chance,
    #: so there is no leakage for the label mix to explain) or ``"within reach of the label mix"``; derived
    #: from the scores when not given.
    reading: str = ""

    def __post_init__(self) -> None:
        if not self.reading:
            if self.beyond:
                reading = "beyond the label mix"
            elif self.score.ci_low <= self.score.chance:
                reading = "attack at chance"
            else:
                reading = "within reach of the label mix"
            object.__setattr__(self, "reading", reading)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        return cls(attack=str(data["attack"]), attacker=str(data["attacker"]), score=Score.from_dict(data["score"]),
                   baseline=Score.from_dict(data["baseline"]), above=float(data["above"]),
                   beyond=bool(data["beyond"]), reading=str(data.get("reading", "")))


@dataclass(frozen=True, kw_only=True)
class SettingSummary:
    """One row of the report's table: a setting of the grid with utility, leakage, privacy and cost.

    ``leakage`` is the best single-update result (highest ASR over attacks, attackers and layers);
    ``worst_upper`` is the result with the highest upper CI bound over every result of the setting,
    single- and multiple-update (what ``--fail-above`` gates on). ``scores`` holds every result.
    """

    id: str
    label: str
    algorithm: str
    defenses: tuple[str, ...]
    view: str
    n_clients: int
    rounds: int
    utility: Utility
    leakage: Score | None
    severity: Severity
    worst_upper: Score | None
    privacy: tuple[Privacy, ...]
    cost: Cost
    scores: tuple[Score, ...]
    #: Each attribute attack beside the label-only baseline, when the audit ran it (report 1.1.0).
    baselines: tuple[Baseline, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SettingSummary:
        return cls(
            id=str(data["id"]), label=str(data["label"]), algorithm=str(data["algorithm"]),
            defenses=tuple(data["defenses"]), view=str(data["view"]), n_clients=int(data["n_clients"]),
            rounds=int(data["rounds"]), utility=Utility.from_dict(data["utility"]),
            leakage=None if data.get("leakage") is None else Score.from_dict(data["leakage"]),
            severity=data["severity"],
            worst_upper=None if data.get("worst_upper") is None else Score.from_dict(data["worst_upper"]),
            privacy=tuple(Privacy.from_dict(p) for p in data["privacy"]), cost=Cost.from_dict(data["cost"]),
            scores=tuple(Score.from_dict(s) for s in data["scores"]),
            baselines=tuple(Baseline.from_dict(b) for b in data.get("baselines") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class Finding:
    """A setting's strongest single-update leakage, as a ranked sentence."""

    setting: str
    label: str
    severity: Severity
    sentence: str
    score: Score

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(setting=str(data["setting"]), label=str(data["label"]), severity=data["severity"],
                   sentence=str(data["sentence"]), score=Score.from_dict(data["score"]))


@dataclass(frozen=True, kw_only=True)
class View:
    """Who sees what in one setting."""

    setting: str
    label: str
    defenses: tuple[str, ...]
    view: str
    text: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> View:
        return cls(setting=str(data["setting"]), label=str(data["label"]), defenses=tuple(data["defenses"]),
                   view=str(data["view"]), text=str(data["text"]))


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """The adversary the figures assume, and who sees what under each setting's defenses."""

    overview: tuple[str, ...]
    views: tuple[View, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThreatModel:
        return cls(overview=tuple(data["overview"]), views=tuple(View.from_dict(v) for v in data["views"]))


@dataclass(frozen=True, kw_only=True)
class Setup:
    """How the audit was run: corpora, clients, rounds, seed, versions and the configuration hash."""

    private_corpora: tuple[str, ...]
    shadow_corpora: tuple[str, ...]
    synthetic: bool
    feature_set: str
    n_features: int | None
    rounds: int
    shadow_runs: int
    seed: int | None
    normalization: str | None
    n_clients: tuple[int, ...]
    versions: Mapping[str, str]
    config_hash: str
    created: str
    wall_seconds: float | None
    config: Any = field(default=None)
    #: The client model and its hidden widths, and the shadow runs' speaker folds (``None`` / empty when the
    #: audit results predate them).
    model: str | None = None
    hidden: tuple[int, ...] = ()
    shadow_folds: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Setup:
        return cls(
            private_corpora=tuple(data["private_corpora"]), shadow_corpora=tuple(data["shadow_corpora"]),
            synthetic=bool(data["synthetic"]), feature_set=str(data["feature_set"]),
            n_features=None if data.get("n_features") is None else int(data["n_features"]),
            rounds=int(data["rounds"]), shadow_runs=int(data["shadow_runs"]),
            seed=None if data.get("seed") is None else int(data["seed"]), normalization=data.get("normalization"),
            n_clients=tuple(int(n) for n in data["n_clients"]), versions=dict(data["versions"]),
            config_hash=str(data["config_hash"]), created=str(data["created"]),
            wall_seconds=_opt(data.get("wall_seconds")), config=data.get("config"), model=data.get("model"),
            hidden=tuple(int(h) for h in data.get("hidden", ())),
            shadow_folds=tuple(int(f) for f in data.get("shadow_folds", ())),
        )


@dataclass(frozen=True, kw_only=True)
class Caveat:
    """A limit of the figures, computed from the data (``kind`` names the condition)."""

    kind: str
    setting: str | None
    text: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Caveat:
        return cls(kind=str(data["kind"]), setting=data.get("setting"), text=str(data["text"]))


@dataclass(frozen=True, kw_only=True)
class PlotInfo:
    """A plot of the report: drawn by the renderers from ``settings``, or skipped with a reason."""

    id: str
    title: str
    caption: str
    available: bool
    reason: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlotInfo:
        return cls(id=str(data["id"]), title=str(data["title"]), caption=str(data["caption"]),
                   available=bool(data["available"]), reason=data.get("reason"))


@dataclass(frozen=True, kw_only=True)
class InversionMetric:
    """One figure of a reconstruction with its 95% interval, its chance level and what it says against chance.

    ``verdict`` is ``"beats chance"`` when the whole interval lies on the better side of chance
    (above it when ``higher_is_better``, below it otherwise), ``"worse than chance"`` when it lies
    on the other side, and ``"indistinguishable from chance"`` otherwise (or when a figure is
    missing). ``unit`` is ``None`` for a similarity, ``"fraction"`` for a rate, or a unit.
    """

    name: str
    label: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    chance: float | None
    higher_is_better: bool
    unit: str | None
    n: int
    verdict: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InversionMetric:
        return cls(
            name=str(data["name"]), label=str(data["label"]), value=_opt(data.get("value")),
            ci_low=_opt(data.get("ci_low")), ci_high=_opt(data.get("ci_high")), chance=_opt(data.get("chance")),
            higher_is_better=bool(data["higher_is_better"]), unit=data.get("unit"), n=int(data.get("n") or 0),
            verdict=str(data["verdict"]),
        )


@dataclass(frozen=True, kw_only=True)
class Inversion:
    """What one reconstruction method recovered from one setting's updates, as the report shows it.

    ``feature_errors`` holds the best-recovered named features (``name``, ``error``, ``ci_low``,
    ``ci_high``, ``chance``, ``unit``), in the features' own units.
    """

    setting: str
    label: str
    method: str
    produces: tuple[str, ...]
    view: str
    n_clients: int
    n_clients_total: int | None
    n_updates: int
    label_truth: str | None
    metrics: tuple[InversionMetric, ...]
    feature_errors: tuple[Mapping[str, Any], ...]
    sentence: str
    caveats: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Inversion:
        total = data.get("n_clients_total")
        return cls(
            setting=str(data["setting"]), label=str(data["label"]), method=str(data["method"]),
            produces=tuple(data.get("produces") or ()), view=str(data["view"]), n_clients=int(data["n_clients"]),
            n_clients_total=None if total is None else int(total), n_updates=int(data["n_updates"]),
            label_truth=data.get("label_truth"),
            metrics=tuple(InversionMetric.from_dict(m) for m in data["metrics"]),
            feature_errors=tuple(dict(f) for f in data.get("feature_errors") or ()), sentence=str(data["sentence"]),
            caveats=tuple(data.get("caveats") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class LeakageReport:
    """What an audit found, ready to render: summary, findings, threat model, setup, table, caveats.

    Build it with :func:`fedaudit.report.build_report`; its JSON form (:meth:`to_dict`) follows the
    ``fedaudit.leakage_report`` schema, version :data:`schema_version`.
    """

    title: str
    generator: str
    summary: tuple[str, ...]
    findings: tuple[Finding, ...]
    threat_model: ThreatModel
    setup: Setup
    settings: tuple[SettingSummary, ...]
    plots: tuple[PlotInfo, ...]
    caveats: tuple[Caveat, ...]
    commands: tuple[str, ...]
    #: Reconstructions of the settings' updates (report 1.1.0; empty when the audit ran none).
    inversions: tuple[Inversion, ...] = ()
    schema: str = REPORT_SCHEMA
    schema_version: str = REPORT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain dicts, lists, strings, numbers and ``None``)."""
        data = _plain(asdict(self))
        order = ("schema", "schema_version")
        return {**{k: data[k] for k in order}, **{k: v for k, v in data.items() if k not in order}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeakageReport:
        """Rebuild a report from its JSON form.

        Raises
        ------
        ReportError
            When ``data`` is not a ``fedaudit.leakage_report`` of a major version this fedaudit reads.
        """
        if data.get("schema") != REPORT_SCHEMA:
            raise ReportError(f"The document has schema {data.get('schema')!r}, not {REPORT_SCHEMA!r}.")
        major = str(data.get("schema_version", "")).split(".")[0]
        if major != REPORT_SCHEMA_VERSION.split(".")[0]:
            raise ReportError(
                f"The report has schema_version {data.get('schema_version')!r}, but this fedaudit reads "
                f"{REPORT_SCHEMA_VERSION.split('.')[0]}.x; rebuild it with `fedaudit report`."
            )
        return cls(
            title=str(data["title"]), generator=str(data["generator"]), summary=tuple(data["summary"]),
            findings=tuple(Finding.from_dict(f) for f in data["findings"]),
            threat_model=ThreatModel.from_dict(data["threat_model"]), setup=Setup.from_dict(data["setup"]),
            settings=tuple(SettingSummary.from_dict(s) for s in data["settings"]),
            plots=tuple(PlotInfo.from_dict(p) for p in data["plots"]),
            caveats=tuple(Caveat.from_dict(c) for c in data["caveats"]), commands=tuple(data["commands"]),
            inversions=tuple(Inversion.from_dict(i) for i in data.get("inversions") or ()),
            schema=str(data["schema"]), schema_version=str(data["schema_version"]),
        )
