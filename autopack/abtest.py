"""Paired comparison of runs: statistics and an honest interpretation (pairing and validity: abtest_pairs).

Everything here is pure except ``compare``, which reads run facts and metrics from the store.
Statistics are over per-pair deltas (treatment - control):

- mean, median and sample standard deviation (n - 1);
- a paired bootstrap 95 % interval of the mean over ``resamples`` resamples of the pairs,
  drawn from ``random.Random(seed)`` (see ``Bootstrap.draws``; the same draws for every
  metric, so a rerun with the same seed gives the same intervals); percentiles by linear
  interpolation between order statistics;
- when n >= 6: the exact two-sided sign test (zero deltas dropped) and the Wilcoxon
  signed-rank test (zero deltas dropped, average ranks for ties). Its p-value is exact,
  conditional on the ties, for up to 25 non-zero deltas; beyond that it uses the normal
  approximation with the tie-corrected variance and no continuity correction.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Sequence

from autopack.domain.lifecycle import PhaseState
from autopack.errors import UsageError
from autopack.abtest_pairs import Pair, ValidityWarning, pair_warnings
from autopack.paired_stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Bootstrap, sign_test_p, wilcoxon_p

SCHEMA = 1
MIN_PAIRS_FOR_TESTS = 6


@dataclass(frozen=True)
class MetricDef:
    name: str
    label: str
    unit: str  # tokens | usd | count | seconds
    value: Callable[[Any], float | int | None]  # RunMetrics -> value


METRICS: tuple[MetricDef, ...] = (
    MetricDef("tokens_total", "tokens (all kinds)", "tokens", lambda m: m.tokens["total"]),
    MetricDef("tokens_input", "input tokens", "tokens", lambda m: m.tokens["input"]),
    MetricDef("tokens_output", "output tokens", "tokens", lambda m: m.tokens["output"]),
    MetricDef("tokens_cache_read", "cache read tokens", "tokens", lambda m: m.tokens["cache_read"]),
    MetricDef("tokens_cache_write", "cache write tokens", "tokens", lambda m: m.tokens["cache_write"]),
    MetricDef("tokens_builder", "builder tokens", "tokens", lambda m: m.tokens_by_role["builder"]["total"]),
    MetricDef("tokens_doctor", "doctor tokens", "tokens", lambda m: m.tokens_by_role["doctor"]["total"]),
    MetricDef("cost_usd", "cost", "usd", lambda m: m.cost_usd),
    MetricDef("doctor_calls", "doctor calls", "count", lambda m: m.doctor_calls),
    MetricDef("doctor_skipped", "doctor calls skipped", "count", lambda m: m.doctor_skipped),
    MetricDef("phases_complete", "phases complete", "count", lambda m: m.phases_complete),
    MetricDef("attempts", "attempts", "count", lambda m: m.attempts),
    MetricDef("escalations", "escalations", "count", lambda m: m.escalations),
    MetricDef("test_runs", "test-suite runs", "count", lambda m: m.test_runs),
    MetricDef("evidence_runs", "goal-evidence runs (f2p, old tests)", "count", lambda m: m.evidence_runs),
    MetricDef("wall_s", "wall time", "seconds", lambda m: m.wall_s),
)


# -- statistics -----------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """One metric over the included pairs (those where both values are known)."""

    label: str
    unit: str
    n: int
    control_mean: float | None
    treatment_mean: float | None
    mean: float | None  # of the deltas
    median: float | None
    stdev: float | None
    ci95: tuple[float, float] | None  # bootstrap interval of the mean delta; None when n < 2
    percent_change: float | None  # of the means; None when the control mean is 0
    sign_test_p: float | None  # None when n < 6
    wilcoxon_p: float | None
    wilcoxon_method: str | None  # exact | normal
    significant: bool  # the interval excludes 0


def summarize(metric: MetricDef, control: Sequence[float], treatment: Sequence[float],
              ci: tuple[float, float] | None) -> Summary:
    """Statistics of one metric from the paired values of the included pairs and its interval."""
    deltas = [_delta(c, t) for c, t in zip(control, treatment)]
    n = len(deltas)
    if n == 0:
        return Summary(metric.label, metric.unit, 0, None, None, None, None, None, None, None,
                       None, None, None, False)
    control_mean, treatment_mean = statistics.fmean(control), statistics.fmean(treatment)
    tested = n >= MIN_PAIRS_FOR_TESTS
    wilcoxon, method = wilcoxon_p(deltas) if tested else (None, None)
    return Summary(
        label=metric.label, unit=metric.unit, n=n, control_mean=control_mean, treatment_mean=treatment_mean,
        mean=statistics.fmean(deltas), median=statistics.median(deltas),
        stdev=statistics.stdev(deltas) if n >= 2 else None, ci95=ci,
        percent_change=_percent(control_mean, treatment_mean),
        sign_test_p=sign_test_p(deltas) if tested else None, wilcoxon_p=wilcoxon, wilcoxon_method=method,
        significant=ci is not None and (ci[0] > 0 or ci[1] < 0),
    )


def _delta(control: float, treatment: float) -> float:
    delta = treatment - control
    return delta if isinstance(delta, int) else round(delta, 9)  # no float noise in ties and signs


def _percent(control: float | None, treatment: float | None) -> float | None:
    if control is None or treatment is None or control == 0:
        return None
    return (treatment - control) / abs(control) * 100


# -- the report -----------------------------------------------------------------------

@dataclass
class PairResult:
    index: int  # 1-based, in the order given
    control: str
    treatment: str
    cassettes: dict[str, str | None]  # arm -> the run's run.cassette as written (None: live answers)
    included: bool
    warnings: list[ValidityWarning]
    control_metrics: Any  # RunMetrics
    treatment_metrics: Any
    deltas: dict[str, float | None]
    percent_change: dict[str, float | None]


@dataclass(frozen=True)
class Flip:
    pair: int
    control: str
    treatment: str
    phase: str
    complete_in: str  # control | treatment


@dataclass(frozen=True)
class ArmSummary:
    runs: int
    cost_usd: float
    phases_complete: int
    cost_per_completed_phase: float | None


@dataclass
class AbReport:
    schema: int
    seed: int
    resamples: int
    allow_mismatch: bool
    pairs: list[PairResult]
    metrics: dict[str, Summary]
    arms: dict[str, ArmSummary]
    flips: list[Flip]
    notes: list[str] = field(default_factory=list)  # problems not tied to one pair
    interpretation: list[str] = field(default_factory=list)

    @property
    def included(self) -> list[PairResult]:
        return [pair for pair in self.pairs if pair.included]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``--json``); tuples become lists."""
        return json.loads(json.dumps(self, default=_fields))


def _fields(value: Any) -> dict[str, Any]:
    """A dataclass's fields, one level deep: json.dumps recurses (asdict deep-copies every value)."""
    if not is_dataclass(value):
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return {f.name: getattr(value, f.name) for f in fields(value)}


def build_report(pairs: Sequence[Pair], facts: dict[str, Any], metrics: dict[str, Any], *,
                 allow_mismatch: bool = False, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES,
                 notes: Sequence[str] = ()) -> AbReport:
    """Check, pair up and summarize: ``facts`` / ``metrics`` map run id -> RunFacts / RunMetrics."""
    results, seen = [], {}
    for index, pair in enumerate(pairs, 1):
        if pair.control == pair.treatment:
            raise UsageError(f"pair {index}: run '{pair.control}' is both control and treatment")
        warnings = pair_warnings(facts[pair.control], facts[pair.treatment], allow_mismatch)
        for run_id in (pair.control, pair.treatment):
            if run_id in seen:
                warnings.append(ValidityWarning("reused_run", f"run {run_id} is also in pair {seen[run_id]}: "
                                                "these pairs are not independent"))
            seen.setdefault(run_id, index)
        included = allow_mismatch or all(w.kind != "plan_mismatch" for w in warnings)
        c, t = metrics[pair.control], metrics[pair.treatment]
        values = [(m.name, m.value(c), m.value(t)) for m in METRICS]
        results.append(PairResult(
            index=index, control=pair.control, treatment=pair.treatment, included=included, warnings=warnings,
            cassettes={"control": facts[pair.control].cassette, "treatment": facts[pair.treatment].cassette},
            control_metrics=c, treatment_metrics=t,
            deltas={name: None if a is None or b is None else _delta(a, b) for name, a, b in values},
            percent_change={name: _percent(a, b) for name, a, b in values},
        ))
    report = AbReport(schema=SCHEMA, seed=seed, resamples=resamples, allow_mismatch=allow_mismatch,
                      pairs=results, metrics=_summaries(results, Bootstrap(seed, resamples)),
                      arms=_arms(results), flips=_flips(results), notes=list(notes))
    report.interpretation = interpret(report)
    return report


def _summaries(results: Sequence[PairResult], bootstrap: Bootstrap) -> dict[str, Summary]:
    """Every metric over the included pairs where both its values are known (wall time may not be)."""
    included = [p for p in results if p.included]
    groups: dict[tuple[int, ...], list[MetricDef]] = defaultdict(list)  # same pairs: one bootstrap pass
    for metric in METRICS:
        groups[tuple(i for i, p in enumerate(included) if p.deltas[metric.name] is not None)].append(metric)
    summaries = {}
    for rows, metrics in groups.items():
        pairs = [included[i] for i in rows]
        cis = bootstrap.mean_cis([[p.deltas[m.name] for p in pairs] for m in metrics])
        for metric, ci in zip(metrics, cis):
            summaries[metric.name] = summarize(metric, [metric.value(p.control_metrics) for p in pairs],
                                               [metric.value(p.treatment_metrics) for p in pairs], ci)
    return {metric.name: summaries[metric.name] for metric in METRICS}


def _arms(results: Sequence[PairResult]) -> dict[str, ArmSummary]:
    arms = {}
    for arm in ("control", "treatment"):
        runs = [getattr(p, f"{arm}_metrics") for p in results if p.included]
        cost, complete = sum(m.cost_usd for m in runs), sum(m.phases_complete for m in runs)
        arms[arm] = ArmSummary(runs=len(runs), cost_usd=cost, phases_complete=complete,
                               cost_per_completed_phase=cost / complete if complete else None)
    return arms


def _flips(results: Sequence[PairResult]) -> list[Flip]:
    """Phases (present in both runs of an included pair) complete in exactly one arm."""
    flips = []
    for p in (p for p in results if p.included):
        control, treatment = p.control_metrics.phase_states, p.treatment_metrics.phase_states
        for phase, state in control.items():
            if phase in treatment and (state == PhaseState.COMPLETE) != (treatment[phase] == PhaseState.COMPLETE):
                arm = "control" if state == PhaseState.COMPLETE else "treatment"
                flips.append(Flip(p.index, p.control, p.treatment, phase, arm))
    return flips


def interpret(report: AbReport) -> list[str]:
    """Plain sentences: what the numbers support, and what they do not."""
    included = report.included
    n = len(included)
    if n == 0:
        return ["No comparable pairs: nothing can be concluded."]
    lines = []
    if n < MIN_PAIRS_FOR_TESTS:
        lines.append(f"Only {n} pair{'s' * (n != 1)}: the sign and signed-rank tests need at least "
                     f"{MIN_PAIRS_FOR_TESTS}, and an interval from so few pairs is rough; treat these "
                     "figures as anecdotes, not evidence.")
    unchanged = []
    for s in report.metrics.values():
        if s.n == 0:
            continue
        if s.ci95 is None:
            lines.append(f"{s.label}: a single pair (delta {format_value(s.mean, s.unit, signed=True)}) "
                         "cannot show a difference.")
        elif s.mean == 0 and s.stdev == 0:
            unchanged.append(s.label)
        elif not s.significant:
            lines.append(f"{s.label}: no significant difference (mean delta "
                         f"{format_value(s.mean, s.unit, signed=True)}, 95 % CI {format_ci(s.ci95, s.unit)} "
                         "contains 0).")
        else:
            pct = f" ({format_percent(s.percent_change)})" if s.percent_change is not None else ""
            line = (f"{s.label}: the treatment is {'higher' if s.mean > 0 else 'lower'} by "
                    f"{format_value(abs(s.mean), s.unit)} per run on average{pct}; 95 % CI "
                    f"{format_ci(s.ci95, s.unit)} excludes 0")
            if s.wilcoxon_p is not None:
                line += f", Wilcoxon p = {format_p(s.wilcoxon_p)}"
                if s.wilcoxon_p >= 0.05:
                    line += ", which does not confirm it at the 5 % level"
            lines.append(line + ".")
    if unchanged:
        lines.append("Identical in every pair: " + ", ".join(unchanged) + ".")
    gained = sum(f.complete_in == "treatment" for f in report.flips)
    lost = len(report.flips) - gained
    if report.flips:
        lines.append(f"{len(report.flips)} phase{'s' * (len(report.flips) != 1)} flipped: {gained} completed "
                     f"only with the treatment, {lost} only with the control.")
    warned = sum(1 for p in included if p.warnings)
    if warned:
        lines.append(f"{warned} of {n} included pairs have validity warnings; a difference may "
                     "come from them rather than from the treatment.")
    return lines


# -- formatting shared by the renderers -----------------------------------------------

def format_value(value: float | int | None, unit: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = ("+" if value > 0 else "-" if value < 0 else "±") if signed else ("-" if value < 0 else "")
    magnitude = abs(value)
    if unit == "usd":
        return f"{sign}${magnitude:,.4f}"
    if unit == "seconds":
        return f"{sign}{magnitude:,.1f} s"
    return f"{sign}{magnitude:,.0f}" if float(magnitude).is_integer() else f"{sign}{magnitude:,.1f}"


def format_ci(ci: tuple[float, float] | None, unit: str) -> str:
    if ci is None:
        return "-"
    return f"[{format_value(ci[0], unit)}, {format_value(ci[1], unit)}]"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def format_p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


# -- reading the store ----------------------------------------------------------------

def compare(db: Any, pairs: Sequence[Pair], *, allow_mismatch: bool = False, seed: int = DEFAULT_SEED,
            resamples: int = DEFAULT_RESAMPLES, notes: Sequence[str] = ()) -> AbReport:
    """Read the runs of ``pairs`` from ``db`` (a store.sql.Readable, or None for no database) and build
    the report; unknown run ids: UsageError."""
    from autopack.store.metrics import run_facts, run_metrics

    if not pairs:
        raise UsageError("no pairs to compare; give --control/--treatment, --pair or --by-flag")
    run_ids = list(dict.fromkeys(run_id for pair in pairs for run_id in (pair.control, pair.treatment)))
    facts = run_facts(db, run_ids) if db is not None else {}
    unknown = [run_id for run_id in run_ids if run_id not in facts]
    if unknown:
        raise UsageError(f"unknown run id{'s' * (len(unknown) > 1)}: {', '.join(unknown)}; "
                         "`autopack status` lists the runs")
    return build_report(pairs, facts, run_metrics(db, run_ids), allow_mismatch=allow_mismatch,
                        seed=seed, resamples=resamples, notes=notes)
