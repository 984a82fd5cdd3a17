"""Alert rule kinds: one evaluator per ``kind``, found in a registry (not an if-chain), so new kinds plug in.

An evaluator takes the rule and a :class:`RuleContext` (the window's and the baseline's summaries, computed
once and only when a rule asks; Redis and the check's time for rules that read other figures) and returns an
:class:`Evaluation`. A new kind is one decorated function here (or in any module imported before the check)
plus its required fields in ``tracejudge.config.alerts.RULE_NEEDS``; ``tests/test_alert_delivery.py`` checks
that the two lists agree.

>>> sorted(RULES) == sorted(__import__("tracejudge.config.alerts", fromlist=["RULE_NEEDS"]).RULE_NEEDS)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from tracejudge.config.alerts import PIPELINE_KINDS, AlertRule
from tracejudge.monitor.models import JudgeStats, NodeStats, QualitySummary


@dataclass
class Evaluation:
    """Whether a rule holds, the observed and baseline figures, and a sentence saying so."""

    holds: bool
    observed: Any
    baseline: Any
    message: str


@dataclass
class RuleContext:
    """What a rule is evaluated against; the summaries are computed on first use and shared by all rules."""

    summarise_window: Callable[[], QualitySummary]
    summarise_baseline: Callable[[], QualitySummary]
    now_ms: int
    redis: Any = None
    prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def window(self) -> QualitySummary:
        return self.summarise_window()

    @cached_property
    def baseline(self) -> QualitySummary:
        return self.summarise_baseline()


Evaluator = Callable[[AlertRule, RuleContext], Evaluation]
RULES: dict[str, Evaluator] = {}


def rule_kind(kind: str) -> Callable[[Evaluator], Evaluator]:
    """Register the evaluator of one rule kind.

    >>> @rule_kind("always_quiet_example")
    ... def quiet(rule, ctx):
    ...     return Evaluation(False, None, None, "quiet")
    >>> RULES.pop("always_quiet_example") is quiet
    True
    """

    def register(fn: Evaluator) -> Evaluator:
        RULES[kind] = fn
        return fn

    return register


def evaluate(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    """The rule's evaluation by its kind's evaluator."""
    try:
        evaluator = RULES[rule.kind]
    except KeyError:  # pragma: no cover - the config refuses unknown kinds
        raise ValueError(f"unknown rule kind {rule.kind!r} (known: {', '.join(sorted(RULES))})") from None
    return evaluator(rule, ctx)


def scoped(summary: QualitySummary, rule: AlertRule) -> tuple[int, float | None, float | None, int, float | None]:
    """(count, mean, variance, below, failure_rate) of the rule's scope (its node and/or judge, else all)."""
    rows: list[JudgeStats | NodeStats]
    if rule.node:
        rows = [n for n in summary.nodes if n.node == rule.node and (rule.judge is None or n.judge == rule.judge)]
    elif rule.judge:
        rows = [j for j in summary.judges if j.judge == rule.judge]
    else:
        rows = list(summary.judges)
    n = sum(r.count for r in rows)
    if not n:
        return 0, None, None, 0, None
    mean = sum((r.mean or 0) * r.count for r in rows) / n
    # pooled variance: E[x^2] - mean^2 over the rows
    ex2 = sum(((r.variance or 0) + (r.mean or 0) ** 2) * r.count for r in rows) / n
    below = sum(r.below for r in rows)
    return n, mean, max(0.0, ex2 - mean * mean), below, below / n


def _scope(rule: AlertRule) -> str:
    return " ".join(x for x in (f"node {rule.node}" if rule.node else "", rule.judge or "") if x) or "all judges"


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _share_above(
    rule: AlertRule,
    ctx: RuleContext,
    rate: Callable[[QualitySummary], tuple[int, float | None]],
    *,
    scope: str,
    counted: str,
    says: Callable[[int, float | None], str],
) -> Evaluation:
    """A share in the window above ``rule.above``, once ``rule.min_count`` things were ``counted``; ``rate`` reads
    (count, share) from a summary (the window's and the baseline's), ``says`` words the observed share."""
    (n, observed), (_, base) = rate(ctx.window), rate(ctx.baseline)
    if n < rule.min_count:
        return Evaluation(False, observed, base, f"{scope}: {n} {counted} in the window (rule needs {rule.min_count})")
    holds = observed is not None and observed > (rule.above or 0)
    return Evaluation(holds, observed, base, f"{scope}: {says(n, observed)} (baseline {_f(base)}), alert above {rule.above:g}")


def _too_few(rule: AlertRule, ctx: RuleContext) -> Evaluation | None:
    n, mean, _, _, _ = scoped(ctx.window, rule)
    if n < rule.min_count:
        bmean = scoped(ctx.baseline, rule)[1]
        return Evaluation(False, mean, bmean, f"{_scope(rule)}: {n} scored results in the window (rule needs {rule.min_count})")
    return None


@rule_kind("gate_pass_rate")
def gate_pass_rate(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    observed, base = ctx.window.totals.gate_pass_rate, ctx.baseline.totals.gate_pass_rate
    holds = ctx.window.totals.traces >= rule.min_count and observed is not None and observed < (rule.below or 0)
    return Evaluation(holds, observed, base, f"gate pass rate {_f(observed)} (baseline {_f(base)}), alert below {rule.below:g}")


@rule_kind("new_failure_type")
def new_failure_type(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    window, baseline = ctx.window, ctx.baseline
    new_codes = sorted(set(window.error_codes) - set(baseline.error_codes))
    seen = {(x.node, x.judge) for x in baseline.nodes if x.below}
    new_pairs = sorted(
        f"{x.node}/{x.judge}" for x in window.nodes
        if x.below and (x.node, x.judge) not in seen
        and (rule.node is None or x.node == rule.node) and (rule.judge is None or x.judge == rule.judge)
    )
    observed = new_codes + new_pairs
    return Evaluation(bool(observed), observed, sorted(baseline.error_codes),
                      "new failure types: " + ", ".join(observed) if observed else "no failure type unseen in the baseline")


@rule_kind("quality_drop")
def quality_drop(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    if quiet := _too_few(rule, ctx):
        return quiet
    mean, bmean, scope = scoped(ctx.window, rule)[1], scoped(ctx.baseline, rule)[1], _scope(rule)
    if rule.below is not None and mean is not None and mean < rule.below:
        return Evaluation(True, mean, bmean, f"{scope}: mean {_f(mean)} below {rule.below:g} (baseline {_f(bmean)})")
    if rule.drop_by is not None and bmean is not None and mean is not None and bmean - mean >= rule.drop_by - 1e-12:
        return Evaluation(True, mean, bmean, f"{scope}: mean {_f(mean)} is {bmean - mean:.3f} under the baseline {_f(bmean)} (alert at {rule.drop_by:g})")
    return Evaluation(False, mean, bmean, f"{scope}: mean {_f(mean)} (baseline {_f(bmean)})")


@rule_kind("failure_rate")
def failure_rate(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    if quiet := _too_few(rule, ctx):
        return quiet
    rate, brate = scoped(ctx.window, rule)[4], scoped(ctx.baseline, rule)[4]
    holds = rate is not None and rate > (rule.above or 0)
    return Evaluation(holds, rate, brate, f"{_scope(rule)}: {_f(rate)} below threshold (baseline {_f(brate)}), alert above {rule.above:g}")


@rule_kind("session_failure_rate")
def session_failure_rate(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    """Conversations judged in the window failing (below threshold or errored): all, or one session judge's share below."""

    def rate(summary: QualitySummary) -> tuple[int, float | None]:
        f = summary.sessions
        if f is None:
            return 0, None
        if rule.judge is None:
            return f.sessions, f.failure_rate
        hit = next((j for j in f.judges if j.judge == rule.judge), None)
        return (hit.count, hit.failure_rate) if hit else (0, None)

    scope = f"sessions ({rule.judge})" if rule.judge else "sessions"
    return _share_above(rule, ctx, rate, scope=scope, counted="judged", says=lambda n, observed: f"{_f(observed)} failing")


@rule_kind("tool_failure_rate")
def tool_failure_rate(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    """The share of the judged traces' tool calls that failed in the window: all tools together, or ``tool``'s.

    A tool past the ten most called in the window is summed into ``(other)`` by the summary: name ``(other)`` to
    watch those together.
    """

    def rate(summary: QualitySummary) -> tuple[int, float | None]:
        if rule.tool is None:
            t = summary.tool_totals
            return (t.calls, t.failure_rate) if t is not None else (0, None)
        hit = next((x for x in summary.tools if x.tool == rule.tool), None)
        return (hit.calls, hit.failure_rate) if hit else (0, None)

    scope = f"tool {rule.tool}" if rule.tool else "all tools"
    return _share_above(rule, ctx, rate, scope=scope, counted="tool calls",
                        says=lambda n, observed: f"failed share {_f(observed)} of {n} tool calls")


@rule_kind("judge_agreement")
def judge_agreement(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    """Our judges against people: the lowest ``statistic`` (kappa or Spearman) of a judge (and version) with the
    HUMAN feedback left on the window's traces, among judges with ``min_count`` pairs or more."""
    from tracejudge.judges.agreement import agreement_by_judge

    read_pairs = ctx.extra.get("human_pairs")
    scope = rule.judge or "all judges"
    if read_pairs is None:
        return Evaluation(False, None, None, f"judge agreement ({scope}): no MLflow store to read people's feedback from")
    pairs = [p for p in read_pairs() if rule.judge is None or p.judge == rule.judge]
    worst: tuple[float, str, str, int] | None = None
    for entry in agreement_by_judge(pairs):
        value = (entry.get("report") or {}).get(rule.statistic)
        if value is None or entry["pairs"] < rule.min_count:
            continue
        if worst is None or value < worst[0]:
            worst = (value, entry["judge"], entry["judge_version"], entry["pairs"])
    if worst is None:
        return Evaluation(False, None, None, f"judge agreement ({scope}): {len(pairs)} pairs with people's feedback in the "
                                             f"window, too few for a {rule.statistic} (rule needs {rule.min_count} per judge)")
    value, judge, version, n = worst
    return Evaluation(value < (rule.below or 0), value, None,
                      f"{judge} (version {version}) agrees with people at {rule.statistic} {value:.3f} over {n} pairs, "
                      f"alert below {rule.below:g}")


@rule_kind("variance_increase")
def variance_increase(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    if quiet := _too_few(rule, ctx):
        return quiet
    var = scoped(ctx.window, rule)[2]
    bn, _, bvar, _, _ = scoped(ctx.baseline, rule)
    holds = var is not None and bvar is not None and bn >= rule.min_count and var > (rule.factor or 0) * max(bvar, 1e-6)
    return Evaluation(holds, var, bvar, f"{_scope(rule)}: variance {_f(var)} vs baseline {_f(bvar)} (alert at x{rule.factor:g})")


# ---------------------------------------------------------------------------------------------- the pipeline
# pipeline_lag, backlog, no_verdicts, judge_error_rate: about the whole pipeline (every experiment the workers
# judge), not the watched experiment's quality. They read the pipeline's state once per check
# (tracejudge.ops.pipeline.read_state: the workers' verdict counts and trace lag over window_minutes, each
# queue's depth and oldest message from a Redis broker, the depth only from RabbitMQ) and ask tracejudge.ops.pipeline.evaluate_pipeline_rule,
# the conditions `tracejudge status` uses too. The queues come from the caller (check_alerts(queues=...): the
# worker's beat task and the CLI pass tracejudge.worker.QUEUES); without them a backlog rule stays quiet.


def pipeline_state(ctx: RuleContext) -> Any:
    """The pipeline's state for this check, read once and shared by every pipeline rule."""
    if "pipeline_state" not in ctx.extra:
        from tracejudge.config import Settings
        from tracejudge.ops.pipeline import read_state

        settings = Settings.from_env()
        broker = None
        queues = tuple(ctx.extra.get("queues") or ())
        if settings.broker_is_redis and queues:
            import redis as redis_lib

            broker = redis_lib.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)
        state = read_state(
            ctx.redis, broker=broker, queues=queues,
            minutes=int(ctx.extra.get("window_minutes") or 15), prefix=ctx.prefix, now=ctx.now_ms / 1000,
        )
        if not settings.broker_is_redis and queues:  # RabbitMQ: each queue's depth from the broker, its age unknown
            from tracejudge.ops.broker import read_amqp_url
            from tracejudge.ops.pipeline import QueueState

            state.queues = {name: QueueState(depth=r.depth) for name, r in read_amqp_url(settings.broker_url, queues).items()}
        ctx.extra["pipeline_state"] = state
    return ctx.extra["pipeline_state"]


def _pipeline_rule(rule: AlertRule, ctx: RuleContext) -> Evaluation:
    from tracejudge.ops.pipeline import evaluate_pipeline_rule

    holds, observed, message = evaluate_pipeline_rule(rule, pipeline_state(ctx))
    return Evaluation(holds, observed, None, message)


for _kind in PIPELINE_KINDS:
    rule_kind(_kind)(_pipeline_rule)
