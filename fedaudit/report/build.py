"""From an audit's results to a :class:`~fedaudit.report.model.LeakageReport`: findings, caveats, table.

Severity reads the lower bound of each 95% interval against chance, so a figure counts only as far
as the data supports it. A setting whose interval includes chance is "indistinguishable from
chance", never "safe": the attacks tried could not tell, at this number of clients.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fedaudit._version import __version__
from fedaudit.report import _format as fmt
from fedaudit.report.model import (
    SEVERITIES,
    Baseline,
    Caveat,
    Cost,
    Finding,
    Inversion,
    InversionMetric,
    LeakageReport,
    PlotInfo,
    Privacy,
    Score,
    SettingSummary,
    Setup,
    Severity,
    ThreatModel,
    Utility,
    View,
)
from fedaudit.report.schema import validate_results

__all__ = [
    "BELOW_CHANCE_MARGIN",
    "FEW_CLIENTS",
    "HIGH_MARGIN",
    "LABEL_ONLY",
    "MEDIUM_MARGIN",
    "SIGNIFICANCE_LEVEL",
    "WIDE_INTERVAL",
    "baseline_sentence",
    "build_report",
    "metric_verdict",
    "settings_above",
    "severity_of",
    "significance_verdict",
]

#: ``ci_low >= chance + HIGH_MARGIN``: high severity.
HIGH_MARGIN = 0.25
#: ``ci_low >= chance + MEDIUM_MARGIN``: medium severity (above chance only: low).
MEDIUM_MARGIN = 0.10
#: Fewer clients than this make the ASR coarse (a caveat).
FEW_CLIENTS = 10
#: An interval wider than this (ci_high - ci_low) is a caveat.
WIDE_INTERVAL = 0.30
#: An attack whose best ASR is this far below chance is mis-calibrated for the setting (a caveat).
BELOW_CHANCE_MARGIN = 0.05
#: A permutation p-value below this is "significant" (as in :mod:`fedaudit.metrics.permutation`).
SIGNIFICANCE_LEVEL = 0.05
#: The baseline attack that reads nothing but the emotion-label mix of each update.
LABEL_ONLY = "label-only"
#: Attackers that learned from shadow runs (the others, such as "public data", have none).
_SHADOW_ATTACKERS = frozenset({"defense-aware", "undefended"})

_ALGORITHMS = {
    "fedsgd": "FedSGD: each client sends one gradient of its local data per round.",
    "fedavg": "FedAvg: each client trains several local steps and sends the change of its weights "
              "(a pseudo-gradient).",
}
_DEFENSE_VIEWS = {
    "udp": "User-level DP (UDP): each client clips its update and adds Gaussian noise before it goes on the "
           "wire; the server sees the noised update.",
    "ldp": "Local DP (LDP): each client clips and noises every update before it goes on the wire; the server "
           "sees only noised updates.",
    "dp-sgd": "DP-SGD: noise is added to clipped per-sample gradients inside local training; the server sees "
              "the update that noisy training produced, with no noise added after it.",
    "sefl": "Secure aggregation (SEFL): clients encrypt their updates and the server sees ciphertexts only; "
            "the recorded updates are what a holder of the decryption key sees after decrypting, so the "
            "figures are the key holder's view, not the server's.",
    "prune": "Pruning: each client sends only the largest entries of its update; the server sees the sparse "
             "update.",
}


def severity_of(ci_low: float, chance: float) -> Severity:
    """Severity of a result from the lower bound of its 95% interval against chance.

    ``"high"`` when ``ci_low >= chance + 0.25``, ``"medium"`` when ``>= chance + 0.10``, ``"low"``
    when above chance at all, else ``"none"`` (the interval includes chance, or lies below it).

    Examples
    --------
    >>> severity_of(0.88, 0.5), severity_of(0.62, 0.5), severity_of(0.55, 0.5), severity_of(0.4, 0.5)
    ('high', 'medium', 'low', 'none')
    """
    eps = 1e-9  # 0.5 + 0.25 is not exactly 0.75 in floating point
    if ci_low >= chance + HIGH_MARGIN - eps:
        return "high"
    if ci_low >= chance + MEDIUM_MARGIN - eps:
        return "medium"
    if ci_low > chance + eps:
        return "low"
    return "none"


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _score(group: str, attack: Mapping[str, Any], layer: str, n: Any, r: Mapping[str, Any]) -> Score:
    n = r.get("n_updates", n)
    return Score(
        group=group, attack=str(attack["attack"]), attacker=str(attack["attacker"]), layer=layer,
        n_updates=n if n == "all" else int(n), asr=float(r["asr"]), ci_low=float(r["ci_low"]),
        ci_high=float(r["ci_high"]), chance=float(r["chance"]), auc=_finite(r.get("auc")),
        uar=_finite(r.get("uar")), n_clients=int(r["n_clients"]),
        repeats=None if r.get("repeats") is None else int(r["repeats"]),
    )


def _scores(cell: Mapping[str, Any]) -> list[Score]:
    out = []
    for attack in cell["attacks"]:
        for layer in sorted(attack["layers"], key=fmt.layer_order):
            out.append(_score("layers", attack, layer, 1, attack["layers"][layer]))
        for n in sorted(attack.get("n_updates") or {}, key=lambda k: fmt.n_updates_order(k if k == "all" else int(k))):
            out.append(_score("n_updates", attack, "fused", n, attack["n_updates"][n]))
    return out


def _best(scores: Iterable[Score]) -> Score | None:
    """Highest ASR, then highest lower bound; the first on ties."""
    best = None
    for s in scores:
        if best is None or (s.asr, s.ci_low) > (best.asr, best.ci_low):
            best = s
    return best


def _privacy(entries: Sequence[Mapping[str, Any]]) -> tuple[Privacy, ...]:
    out = []
    for p in entries:
        eps = [e for e in (_finite(v) for v in (p.get("epsilon_per_client") or {}).values()) if e is not None]
        out.append(Privacy(
            mechanism=str(p["mechanism"]), level=str(p["level"]), delta=float(p["delta"]),
            epsilon_median=statistics.median(eps) if eps else None, epsilon_max=max(eps) if eps else None,
            epsilon_aggregate=_finite(p.get("epsilon_aggregate")), accountant=p.get("accountant"),
            noise_multiplier=_finite(p.get("noise_multiplier")),
        ))
    return tuple(out)


def _baselines(scores: Sequence[Score]) -> tuple[Baseline, ...]:
    """Each attribute attack's best single-update result beside the label-only baseline's.

    The baseline of the same attacker when there is one, else the best label-only result of the setting.
    """
    single = [s for s in scores if s.group == "layers"]
    label_only: dict[str, Score] = {}
    for s in single:
        if s.attack == LABEL_ONLY:
            label_only[s.attacker] = _best([s, label_only[s.attacker]]) if s.attacker in label_only else s
    if not label_only:
        return ()
    fallback = _best(label_only.values())
    out = []
    for attack, attacker in dict.fromkeys((s.attack, s.attacker) for s in single if s.attack != LABEL_ONLY):
        best = _best(s for s in single if s.attack == attack and s.attacker == attacker)
        base = label_only.get(attacker, fallback)
        if best is None or base is None:
            continue
        out.append(Baseline(attack=attack, attacker=attacker, score=best, baseline=base, above=best.asr - base.asr,
                            beyond=best.ci_low > base.ci_high))
    return tuple(out)


def _setting(cell: Mapping[str, Any]) -> SettingSummary:
    scores = _scores(cell)
    leakage = _best(s for s in scores if s.group == "layers")
    worst = None
    for s in scores:
        if worst is None or (s.ci_high, s.asr) > (worst.ci_high, worst.asr):
            worst = s
    utility = cell.get("utility") or {}
    cost = cell.get("cost") or {}
    return SettingSummary(
        id=str(cell["id"]), label=str(cell["label"]), algorithm=str(cell["algorithm"]),
        defenses=tuple(cell["defenses"]), view=str(cell["view"]), n_clients=int(cell["n_clients"]),
        rounds=int(cell["rounds"]),
        utility=Utility(test_uar=_finite(utility.get("test_uar")), test_acc=_finite(utility.get("test_acc")),
                        val_uar=_finite(utility.get("val_uar"))),
        leakage=leakage, severity=severity_of(leakage.ci_low, leakage.chance) if leakage else "none",
        worst_upper=worst, privacy=_privacy(cell.get("privacy") or []),
        cost=Cost(**{k: _finite(cost.get(k)) for k in
                     ("bytes_per_round", "plain_bytes_per_round", "encrypt_seconds", "decrypt_seconds",
                      "wall_seconds")}),
        scores=tuple(scores), baselines=_baselines(scores),
    )


def _sentence(setting: SettingSummary, score: Score, severity: Severity) -> str:
    d = {"asr": score.asr, "ci_low": score.ci_low, "ci_high": score.ci_high, "chance": score.chance}
    who = f"the {score.attack} attack{fmt.attacker_phrase(score.attacker)}"
    view = ", as seen by a holder of the decryption key" if setting.view == "key holder" else ""
    if severity != "none":
        return (f"Updates of {fmt.layer_phrase(score.layer)} reveal the gender of {fmt.pct(score.asr)} of clients "
                f"(95% CI {fmt.interval(score.ci_low, score.ci_high)}, chance {fmt.pct(score.chance)}) to {who} "
                f"in {setting.label}{view}.")
    if score.ci_high < score.chance:
        verdict = ("below chance: the attacker's classifier is mis-calibrated for this setting, which is no "
                   "evidence that the setting is safe")
    else:
        verdict = "indistinguishable from chance"
    return (f"In {setting.label}{view}, the best result of {who} is {fmt.figure(d)} on updates of "
            f"{fmt.layer_phrase(score.layer)}: {verdict}.")


def _asdict(score: Score) -> dict[str, float]:
    return {"asr": score.asr, "ci_low": score.ci_low, "ci_high": score.ci_high, "chance": score.chance}


def baseline_sentence(b: Baseline) -> str:
    """What an attack scores beyond the label-only baseline, as a sentence."""
    points = 100 * b.above
    verdict = {
        "beyond the label mix": "beyond what the label mix, as the baseline infers it, explains (the inferred mix "
                                "underestimates a skew once the model is accurate, so check the corpus's emotion "
                                "mix by gender too: docs/label-confounds.md)",
        "attack at chance": "but the attack itself is indistinguishable from chance, so there is no leakage here "
                            "for the label mix to explain",
        "within reach of the label mix": "within reach of the label mix alone, so the attack may be reading "
                                         "emotions rather than voices",
    }[b.reading]
    return (f"The label-only baseline, which sees only the emotion-label mix of each update, scores "
            f"{fmt.figure(_asdict(b.baseline))}; "
            f"the {b.attack} attack is {abs(points):.0f} points {'above' if points >= 0 else 'below'} it, {verdict}.")


def _significance_of(cell: Mapping[str, Any], score: Score) -> Mapping[str, Any] | None:
    """The permutation test of the attack entry a score comes from, when the audit ran one."""
    for attack in cell["attacks"]:
        if attack["attack"] == score.attack and attack["attacker"] == score.attacker:
            return attack.get("significance")
    return None


def _p(p: float) -> str:
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def significance_verdict(sig: Mapping[str, Any]) -> str:
    """The verdict of a permutation test (the ``significance`` object of an attack entry), as a clause.

    Examples
    --------
    >>> significance_verdict({"p_value": 0.0476, "n_permutations": 20})
    'significant at p = 0.048 (N = 20 gender-free relabellings of the shadow speakers)'
    >>> significance_verdict({"p_value": 0.41, "n_permutations": 20})
    'not distinguishable from an attacker with meaningless labels (p = 0.41)'
    """
    p, n = float(sig["p_value"]), int(sig["n_permutations"])
    if p < SIGNIFICANCE_LEVEL:
        return f"significant at p = {_p(p)} (N = {n} gender-free relabellings of the shadow speakers)"
    return f"not distinguishable from an attacker with meaningless labels (p = {_p(p)})"


def _findings(results: Mapping[str, Any], settings: Sequence[SettingSummary]) -> tuple[Finding, ...]:
    cells = {c["id"]: c for c in results["cells"]}
    rows = [(s, s.leakage) for s in settings if s.leakage is not None]
    rank = {sev: i for i, sev in enumerate(SEVERITIES)}
    rows.sort(key=lambda r: (rank[r[0].severity], -(r[1].ci_low - r[1].chance), -r[1].asr))
    out = []
    for s, score in rows:
        sentence = _sentence(s, score, s.severity)
        sig = _significance_of(cells[s.id], score)
        if sig is not None:
            sentence += (f" Against refits of the same attack on gender-free relabellings of its shadow speakers "
                         f"(null median {fmt.pct(float(sig['null_median']))}, 95th percentile "
                         f"{fmt.pct(float(sig['null_p95']))}), this is {significance_verdict(sig)}.")
        base = next((b for b in s.baselines if b.attack == score.attack and b.attacker == score.attacker), None)
        if base is not None:
            sentence += " " + baseline_sentence(base)
        out.append(Finding(setting=s.id, label=s.label, severity=s.severity, sentence=sentence, score=score))
    return tuple(out)


def _significance_summary(results: Mapping[str, Any]) -> str | None:
    """One sentence on the permutation tests of the shadow-trained attacks, or on their absence."""
    shadow = [a for c in results["cells"] for a in c["attacks"] if str(a["attacker"]) in _SHADOW_ATTACKERS]
    if not shadow:
        return None
    tested = [a["significance"] for a in shadow if a.get("significance")]
    if not tested:
        return ("No permutation test was run (audit key permutations = 0), so no figure here is checked against "
                "an attacker whose shadow labels mean nothing; with few shadow speakers such an attacker can score "
                "well above chance.")
    significant = sum(float(t["p_value"]) < SIGNIFICANCE_LEVEL for t in tested)
    sizes = sorted({int(t["n_permutations"]) for t in tested})
    return (f"Permutation test: {significant} of {len(tested)} shadow-trained attacks score significantly above "
            f"refits on gender-free relabellings of their shadow speakers (p < {SIGNIFICANCE_LEVEL:g}, N = "
            f"{_and([str(n) for n in sizes])} relabellings); the others are not distinguishable from an attacker "
            "with meaningless labels.")


def _and(words: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _summary(results: Mapping[str, Any], settings: Sequence[SettingSummary], findings: Sequence[Finding],
             caveats: Sequence[Caveat]) -> tuple[str, ...]:
    setup = results["setup"]
    attacks = sorted({s.attack for st in settings for s in st.scores})
    corpora = ", ".join(setup["private_corpora"])
    synthetic = " (synthetic demo data)" if setup["synthetic"] else ""
    out = [
        f"This audit attacked the updates of {_plural(len(settings), 'setting')} of federated training on "
        f"{corpora}{synthetic} with the {_and(attacks) or 'no'} attack{'s' if len(attacks) != 1 else ''}, "
        "inferring each client's gender from what it sent."
    ]
    top = _best(st.leakage for st in settings if st.leakage is not None)
    if top is None:
        out.append("No attack produced a result, so this report has no leakage figure.")
        return tuple(out)
    home = next(st for st in settings if st.leakage is top)
    out.append(
        f"The highest attack success rate in the table is {fmt.pct(top.asr)} (95% CI "
        f"{fmt.interval(top.ci_low, top.ci_high)}, chance {fmt.pct(top.chance)}), in {home.label} "
        f"({top.attack} attack, {fmt.layer_phrase(top.layer)})."
    )
    counts = {sev: sum(st.severity == sev for st in settings if st.leakage is not None) for sev in SEVERITIES}
    out.append(
        f"By the lower bound of each 95% interval against chance: {counts['high']} high, {counts['medium']} medium "
        f"and {counts['low']} low severity, and {counts['none']} indistinguishable from chance."
    )
    serious = [f for f in findings if f.severity in ("high", "medium")][:3]
    out.extend(f.sentence for f in serious)
    tested = _significance_summary(results)
    if tested is not None:
        out.append(tested)
    defended = [st for st in settings if st.defenses and st.leakage is not None]
    if defended and all(st.severity == "none" for st in defended):
        out.append("No defended setting leaks measurably more than chance to these attacks; that does not make "
                   "it safe, only indistinguishable from chance at this number of clients.")
    elif counts["none"]:
        out.append("A setting indistinguishable from chance is not shown to be safe: the attacks tried here "
                   "could not tell, at this number of clients.")
    if caveats:
        out.append(f"{_plural(len(caveats), 'caveat')} below qualify these figures.")
    return tuple(out)


def _threat_model(results: Mapping[str, Any], settings: Sequence[SettingSummary]) -> ThreatModel:
    algorithms = sorted({st.algorithm for st in settings})
    overview = [
        "The adversary is an honest-but-curious server: it follows the protocol, keeps every update it "
        "receives, and tries to infer each client's gender from those updates alone.",
        "Attacks are fitted on shadow runs, federated trainings the attacker simulates on corpora it holds "
        f"({', '.join(results['setup']['shadow_corpora'])}); a defense-aware attacker runs them with the "
        "target's defense, an undefended attacker without it.",
        "The attack success rate (ASR) is the share of clients whose gender is inferred correctly, with a 95% "
        "confidence interval; chance is what guessing the majority gender would score.",
        "Single-update figures attack one update per client; multiple-update figures average several updates "
        "of the same client first.",
        *(_ALGORITHMS[a] for a in algorithms if a in _ALGORITHMS),
    ]
    views = []
    for st in settings:
        parts = [_DEFENSE_VIEWS.get(d, f"{d}: the defense changes updates on the client; the server sees "
                                       "what is sent.") for d in st.defenses]
        text = " ".join(parts) or "No defense: the server sees every client's update in the clear."
        views.append(View(setting=st.id, label=st.label, defenses=st.defenses, view=st.view, text=text))
    return ThreatModel(overview=tuple(overview), views=tuple(views))


def _caveats(results: Mapping[str, Any], settings: Sequence[SettingSummary]) -> tuple[Caveat, ...]:
    out: list[Caveat] = []
    setup = results["setup"]
    if setup["synthetic"]:
        corpora = ", ".join(dict.fromkeys([*setup["private_corpora"], *setup["shadow_corpora"]]))
        out.append(Caveat(kind="synthetic", setting=None, text=(
            f"The corpora ({corpora}) are synthetic demo data: the figures show how the audit works, not how "
            "much a real speech corpus leaks.")))
    for cell, st in zip(results["cells"], settings, strict=True):
        if st.n_clients < FEW_CLIENTS:
            out.append(Caveat(kind="few_clients", setting=st.id, text=(
                f"{st.label}: only {st.n_clients} clients, so one client moves the ASR by "
                f"{100 / st.n_clients:.0f} points.")))
        if st.leakage is not None and st.leakage.ci_high - st.leakage.ci_low > WIDE_INTERVAL + 1e-9:
            width = 100 * (st.leakage.ci_high - st.leakage.ci_low)
            out.append(Caveat(kind="wide_interval", setting=st.id, text=(
                f"{st.label}: the 95% interval of the best ASR is {width:.0f} points wide "
                f"({fmt.interval(st.leakage.ci_low, st.leakage.ci_high)}); more clients or repeats would "
                "narrow it.")))
        if st.view == "key holder":
            out.append(Caveat(kind="key_holder_view", setting=st.id, text=(
                f"{st.label}: the figures are a key holder's view; the server sees ciphertexts only, but a "
                "holder of the decryption key sees these updates.")))
        for attack in cell["attacks"]:
            attacker = str(attack["attacker"])
            if attacker in _SHADOW_ATTACKERS:
                default = [] if attacker == "undefended" else list(st.defenses)
                shadow = list(attack.get("shadow_defenses", default))
                if sorted(shadow) != sorted(st.defenses):
                    shown = ", ".join(shadow) or "no defense"
                    out.append(Caveat(kind="shadow_defense_differs", setting=st.id, text=(
                        f"{st.label}: the {attack['attack']} attack ({attacker} attacker) learned from shadow runs "
                        f"with {shown}, not the target's {', '.join(st.defenses) or 'no defense'}; its figures may "
                        "understate what a defense-aware attacker infers.")))
            best = _best(s for s in st.scores
                         if s.group == "layers" and s.attack == attack["attack"] and s.attacker == attacker)
            sig = attack.get("significance")
            if sig is not None and best is not None and float(sig["p_value"]) >= SIGNIFICANCE_LEVEL \
                    and severity_of(best.ci_low, best.chance) != "none":
                out.append(Caveat(kind="not_significant", setting=st.id, text=(
                    f"{st.label}: the {attack['attack']} attack ({attacker} attacker) scores {fmt.pct(best.asr)}, "
                    f"above chance, but refits on gender-free relabellings of its shadow speakers score a median "
                    f"{fmt.pct(float(sig['null_median']))} (95th percentile {fmt.pct(float(sig['null_p95']))}): "
                    f"{significance_verdict(sig)}.")))
            if best is not None and best.asr < best.chance - BELOW_CHANCE_MARGIN:
                out.append(Caveat(kind="below_chance", setting=st.id, text=(
                    f"{st.label}: the {attack['attack']} attack ({attacker} attacker) scores {fmt.pct(best.asr)} "
                    f"at best, below chance ({fmt.pct(best.chance)}): its classifier is mis-calibrated for this "
                    "setting, so the figure is no evidence of protection.")))
        warnings = [(None, w) for w in cell.get("warnings") or []]
        warnings += [(a, w) for a in cell["attacks"] for w in a.get("warnings") or []]
        for attack, w in warnings:
            where = st.label if attack is None else f"{st.label}, {attack['attack']} attack ({attack['attacker']})"
            out.append(Caveat(kind="warning", setting=st.id, text=f"{where}: {w}"))
    seen: set[tuple[str, str | None, str]] = set()
    unique = []
    for c in out:
        if (c.kind, c.setting, c.text) not in seen:
            seen.add((c.kind, c.setting, c.text))
            unique.append(c)
    return tuple(unique)


def _plots(settings: Sequence[SettingSummary]) -> tuple[PlotInfo, ...]:
    layered = any(s.group == "layers" for st in settings for s in st.scores)
    dp = any(st.leakage and any(p.epsilon_median is not None for p in st.privacy) for st in settings)
    curves = any(len({s.n_updates for s in st.scores if s.group == "n_updates"}) >= 2 for st in settings)
    tradeoff = any(st.leakage and st.utility.test_uar is not None for st in settings)
    return (
        PlotInfo(id="asr-per-layer", title="ASR per layer", available=layered,
                 caption="Best single-update ASR of each layer alone and of all layers fused, per setting, with "
                         "95% intervals; the dashed line is chance.",
                 reason=None if layered else "No attack reported per-layer results."),
        PlotInfo(id="asr-vs-epsilon", title="ASR against epsilon", available=dp,
                 caption="Best single-update ASR (left axis, with 95% intervals) and test UAR (right axis) of the "
                         "differentially private settings against their median claimed epsilon per client.",
                 reason=None if dp else "No setting has differential privacy with a claimed epsilon."),
        PlotInfo(id="asr-vs-updates", title="ASR against the number of updates averaged", available=curves,
                 caption="ASR of the multiple-update attack (all layers fused) when several updates of a client "
                         "are averaged, with 95% intervals; the dashed line is chance.",
                 reason=None if curves else "No attack averaged two or more numbers of updates per client."),
        PlotInfo(id="utility-vs-leakage", title="Utility against leakage", available=tradeoff,
                 caption="Test UAR of emotion recognition against the best single-update ASR, one point per "
                         "setting; up and to the left is better.",
                 reason=None if tradeoff else "No setting reports both a test UAR and an ASR."),
    )


def metric_verdict(metric: Mapping[str, Any]) -> str:
    """What a reconstruction figure says against its chance level, from its 95% interval.

    Examples
    --------
    >>> metric_verdict({"ci_low": 0.8, "ci_high": 0.9, "chance": 0.1, "higher_is_better": True})
    'beats chance'
    >>> metric_verdict({"ci_low": 2.0, "ci_high": 3.0, "chance": 2.5, "higher_is_better": False})
    'indistinguishable from chance'
    """
    lo, hi, chance = (_finite(metric.get(k)) for k in ("ci_low", "ci_high", "chance"))
    if lo is None or hi is None or chance is None:
        return "indistinguishable from chance"
    better_side = lo > chance if metric.get("higher_is_better", True) else hi < chance
    worse_side = hi < chance if metric.get("higher_is_better", True) else lo > chance
    return "beats chance" if better_side else "worse than chance" if worse_side else "indistinguishable from chance"


def _metric_phrase(m: InversionMetric) -> str:
    return (f"{m.label} {fmt.measure(m.value, m.unit)} (95% CI {fmt.measure_interval(m.ci_low, m.ci_high, m.unit)}, "
            f"chance {fmt.measure(m.chance, m.unit)}: {m.verdict})")


def _inversions(results: Mapping[str, Any], settings: Sequence[SettingSummary]) -> tuple[Inversion, ...]:
    out = []
    for cell, st in zip(results["cells"], settings, strict=True):
        for inv in cell.get("inversions") or ():
            metrics = tuple(
                InversionMetric(
                    name=str(m["name"]), label=str(m["label"]), value=_finite(m.get("value")),
                    ci_low=_finite(m.get("ci_low")), ci_high=_finite(m.get("ci_high")), chance=_finite(m.get("chance")),
                    higher_is_better=bool(m["higher_is_better"]), unit=m.get("unit"), n=int(m.get("n") or 0),
                    verdict=metric_verdict(m),
                ) for m in inv["metrics"])
            view = ", as seen by a holder of the decryption key" if inv.get("view", st.view) == "key holder" else ""
            who = (f"the {inv['method']} reconstruction of {_plural(int(inv['n_updates']), 'update')} from "
                   f"{_plural(int(inv['n_clients']), 'client')}")
            if metrics:
                sentence = f"In {st.label}{view}, {who} scores {_and([_metric_phrase(m) for m in metrics[:3]])}."
            else:
                sentence = f"In {st.label}{view}, {who} produced no score."
            errors = tuple({k: (_finite(f.get(k)) if k in ("error", "ci_low", "ci_high", "chance") else f.get(k))
                            for k in ("name", "error", "ci_low", "ci_high", "chance", "unit")}
                           for f in (inv.get("feature_errors") or ())[:5])
            total = inv.get("n_clients_total")
            out.append(Inversion(
                setting=st.id, label=st.label, method=str(inv["method"]), produces=tuple(inv.get("produces") or ()),
                view=str(inv.get("view", st.view)), n_clients=int(inv["n_clients"]),
                n_clients_total=None if total is None else int(total), n_updates=int(inv["n_updates"]),
                label_truth=inv.get("label_truth"), metrics=metrics, feature_errors=errors, sentence=sentence,
                caveats=tuple(inv.get("caveats") or ()),
            ))
    return tuple(out)


def _inversion_summary(inversions: Sequence[Inversion]) -> str | None:
    """One sentence on the reconstructions: how many beat chance on their first figure."""
    if not inversions:
        return None
    scored = [i for i in inversions if i.metrics]
    beats = [i for i in scored if i.metrics[0].verdict == "beats chance"]
    methods = _and(sorted({i.method for i in inversions}))
    return (f"Reconstruction ({methods}): {len(beats)} of {_plural(len(inversions), 'inversion')} recover client data "
            f"better than chance on their first figure (the inversion section gives each with its interval and "
            "chance level).")


def build_report(results: Mapping[str, Any], *, title: str = "Federated learning leakage report") -> LeakageReport:
    """Build the leakage report of an audit.

    Parameters
    ----------
    results
        The audit's results (``results.json``, schema ``fedaudit.audit_results`` 1.x); validated first.
    title
        The report's title.

    Returns
    -------
    LeakageReport
        Findings ranked by severity, summary, threat model, setup, table, plots and caveats.

    Raises
    ------
    ReportError
        When ``results`` breaks its schema (one sentence naming the key).
    """
    validate_results(results)
    settings = tuple(_setting(cell) for cell in results["cells"])
    findings = _findings(results, settings)
    caveats = _caveats(results, settings)
    inversions = _inversions(results, settings)
    setup = results["setup"]
    summary = _summary(results, settings, findings, caveats)
    inverted = _inversion_summary(inversions)
    if inverted is not None:
        summary = (*summary[:-1], inverted, summary[-1]) if caveats else (*summary, inverted)
    return LeakageReport(
        title=title, generator=f"fedaudit {__version__}",
        summary=summary, findings=findings,
        threat_model=_threat_model(results, settings),
        setup=Setup(
            private_corpora=tuple(setup["private_corpora"]), shadow_corpora=tuple(setup["shadow_corpora"]),
            synthetic=bool(setup["synthetic"]), feature_set=str(setup["feature_set"]),
            n_features=setup.get("n_features"), rounds=int(setup["rounds"]), shadow_runs=int(setup["shadow_runs"]),
            seed=setup.get("seed"), normalization=setup.get("normalization"),
            n_clients=tuple(sorted({st.n_clients for st in settings})), versions=dict(results["versions"]),
            config_hash=str(results["config_hash"]), created=str(results["created"]),
            wall_seconds=_finite(results.get("wall_seconds")), config=results["config"], model=setup.get("model"),
            hidden=tuple(setup.get("hidden", ())), shadow_folds=tuple(setup.get("shadow_folds", ())),
        ),
        settings=settings, plots=_plots(settings), caveats=caveats, commands=tuple(results["commands"]),
        inversions=inversions,
    )


def settings_above(report: Mapping[str, Any], threshold: float) -> list[dict[str, Any]]:
    """Settings of a report (its JSON form) with an ASR whose upper 95% bound exceeds ``threshold``.

    Every result of a setting counts, single- and multiple-update; each entry names the worst one.

    Returns
    -------
    list of dict
        ``{"id", "label", "ci_high", "score"}`` per failing setting, in the report's order.
    """
    out = []
    for st in report["settings"]:
        worst = st.get("worst_upper")
        if worst is not None and worst["ci_high"] > threshold:
            out.append({"id": st["id"], "label": st["label"], "ci_high": worst["ci_high"], "score": worst})
    return out
