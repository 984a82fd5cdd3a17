"""Quality alerts: ``quality_alerts`` rules checked against the summary of the last window and its baseline.

:func:`check_alerts` summarises the window (the last ``window_minutes``) and the baseline (the
``baseline_days`` before it) with the same aggregation as the report, evaluates each rule, and sends:

* ``firing`` once when a rule starts to hold (deduplicated in Redis with ``SET NX``, so several checkers
  or a cron next to the beat schedule send one alert);
* ``resolved`` once when it stops holding (the key is deleted; whoever deleted it sends).

Each alert names the rule, the observed and baseline figures, the window, and up to 5 example traces with
MLflow UI links. Sinks: a JSON webhook, a Slack-compatible webhook (``{"text": ...}``), the log; HTTP sinks
are retried with exponential backoff (tenacity). The Celery beat schedule runs it every quarter window
(``tracejudge.check_quality_alerts``); ``tracejudge alerts check --once`` runs it for cron (exit 1 when any
rule holds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tracejudge.config import Settings
from tracejudge.config.alerts import AlertRule, QualityAlertsConfig
from tracejudge.monitor.alert_delivery import Delivery, DeliveryState, Status, deliver, slack_payload
from tracejudge.monitor.alert_rules import Evaluation, RuleContext, evaluate
from tracejudge.monitor.models import QualitySummary
from tracejudge.monitor.summary import iso
from tracejudge.monitor.window import MonitorQuery

log = logging.getLogger(__name__)

STATE_KEY = "tracejudge:alerts:"
EXAMPLES = 5


class Alert(BaseModel):
    """What a sink receives."""

    status: Literal["firing", "resolved"]
    rule: str = Field(description="the rule's name, or its kind and scope")
    rule_id: str
    kind: str
    experiment_id: str
    window: dict[str, str] = Field(description="since/until, ISO 8601 UTC")
    baseline_window: dict[str, str]
    observed: Any = None
    baseline: Any = None
    message: str
    examples: list[dict[str, Any]] = Field(default_factory=list, description="up to 5: trace_id, url, judge, node, score")
    links: dict[str, str] = Field(default_factory=dict)


class RuleOutcome(BaseModel):
    rule: str
    rule_id: str
    holds: bool
    observed: Any = None
    baseline: Any = None
    message: str
    checked: bool = Field(True, description="false: the rule names a judge or node no config has, so it was not evaluated")
    sent: Literal["firing", "resolved"] | None = Field(None, description="what at least one sink accepted in this check")
    deliveries: list[Delivery] = Field(default_factory=list, description="each sink's delivery of the current state")


class CheckResult(BaseModel):
    experiment_id: str
    window: dict[str, str]
    outcomes: list[RuleOutcome]
    warnings: list[str] = Field(default_factory=list)

    @property
    def firing(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.holds]


def rule_id(rule: AlertRule, experiment_id: str) -> str:
    """A stable id of (experiment, rule), the dedup key.

    >>> len(rule_id(AlertRule(kind="failure_rate", above=0.2), "1"))
    16
    """
    # the pipeline rules' (and tool_failure_rate's) fields only when set, so the ids of rules written before them stay the same
    unset = {k for k in ("seconds", "depth", "minutes", "queue", "code", "tool") if getattr(rule, k) is None}
    if rule.statistic == "kappa":  # judge_agreement's default: likewise left out, so older ids stay the same
        unset.add("statistic")
    blob = json.dumps([experiment_id, rule.model_dump(mode="json", exclude=unset)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _examples(window: QualitySummary, rule: AlertRule) -> list[dict[str, Any]]:
    out = []
    for f in window.failures:
        if rule.node and f.node != rule.node or rule.judge and f.judge != rule.judge:
            continue
        out.append({"trace_id": f.trace_id, "url": f.url, "judge": f.judge, "node": f.node, "score": f.score, "error_code": f.error_code})
        if len(out) >= EXAMPLES:
            break
    if not out:
        out = [{"trace_id": t.trace_id, "url": t.url, "score": t.score} for t in window.bottom_traces[:EXAMPLES]]
    return out


def _human_pairs(experiment: str, start_ms: int, end_ms: int) -> list[Any]:
    """Our judges' scores paired with people's feedback on the window's traces (``tracejudge agreement``'s pairs)."""
    from tracejudge.mlflow_io.feedback import judge_human_pairs
    from tracejudge.mlflow_io.store import TraceStore

    store = TraceStore(Settings.from_env().mlflow_tracking_uri)
    return list(judge_human_pairs(store.client, store.experiment_id(experiment), start_ms, end_ms))


def check_alerts(
    config: QualityAlertsConfig,
    *,
    experiment: str,
    redis: Any,
    summarise: Any = None,
    now_ms: int | None = None,
    prefix: str | None = None,
    known_judges: set[str] | None = None,
    known_nodes: set[str] | None = None,
    queues: tuple[str, ...] = (),
) -> CheckResult:
    """Check every rule once, deliver what sinks are owed, and return each rule's outcome and deliveries.

    A rule naming a judge or node no config has is not evaluated (it is in ``warnings``); a firing or
    resolved alert a sink did not accept is sent again at the next check (``alert_delivery``).
    """
    from tracejudge.monitor.collect import summarise_quality

    prefix = Settings.from_env().key_prefix if prefix is None else prefix
    summarise = summarise or (lambda q, now: summarise_quality(q, redis=redis, prefix=prefix, now_ms=now))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    window_ms = config.window_minutes * 60_000
    start = now_ms - window_ms
    base_start = start - int(config.baseline_days * 86_400_000)
    ctx = RuleContext(
        summarise_window=lambda: summarise(MonitorQuery(experiment=experiment, workflow=config.workflow, since=iso(start), until=iso(now_ms), bucket="hour"), now_ms),
        summarise_baseline=lambda: summarise(MonitorQuery(experiment=experiment, workflow=config.workflow, since=iso(base_start), until=iso(start), bucket="day"), now_ms),
        now_ms=now_ms, redis=redis, prefix=prefix,
        extra={"queues": queues, "window_minutes": config.window_minutes,  # for the pipeline rules (end of alert_rules.py)
               "human_pairs": lambda: _human_pairs(experiment, start, now_ms)},  # for judge_agreement
    )
    window = ctx.window
    unable = rule_problems(config, known_judges=known_judges, known_nodes=known_nodes)
    warnings = [w for problems in unable.values() for w in problems]
    for w in warnings:
        log.warning(w)
    outcomes = []
    for index, rule in enumerate(config.rules):
        rid = rule_id(rule, window.experiment_id)
        if index in unable:
            outcomes.append(RuleOutcome(rule=rule.label, rule_id=rid, holds=False, checked=False,
                                        message="not checked: " + "; ".join(p.split(": ", 1)[1] for p in unable[index])))
            continue
        result = evaluate(rule, ctx)
        outcome = RuleOutcome(rule=rule.label, rule_id=rid, holds=result.holds, observed=result.observed, baseline=result.baseline, message=result.message)
        store = DeliveryState(redis, f"{prefix}{STATE_KEY}{window.experiment_id}:{rid}")
        _, state = store.transition(result.holds, since=iso(now_ms), sinks=config.sinks)

        def make_alert(status: Status, rule: AlertRule = rule, rid: str = rid, result: Evaluation = result) -> Alert:
            return Alert(
                status=status,
                rule=rule.label,
                rule_id=rid,
                kind=rule.kind,
                experiment_id=window.experiment_id,
                window={"since": window.since, "until": window.until},
                baseline_window={"since": ctx.baseline.since, "until": ctx.baseline.until},
                observed=result.observed,
                baseline=result.baseline,
                message=("RESOLVED: " if status == "resolved" else "") + result.message,
                examples=_examples(window, rule) if status == "firing" else [],
                links={"quality": window.links.experiment_quality, "traces": window.links.experiment_traces},
            )

        outcome.deliveries = deliver(store, state, config.sinks, make_alert)
        outcome.sent = next((d.status for d in outcome.deliveries if d.sent_now), None)
        outcomes.append(outcome)
    return CheckResult(experiment_id=window.experiment_id, window={"since": window.since, "until": window.until}, outcomes=outcomes, warnings=warnings)


def rule_problems(config: QualityAlertsConfig, *, known_judges: set[str] | None, known_nodes: set[str] | None) -> dict[int, list[str]]:
    """Per rule index, why the rule can never fire (a judge or node no config has)."""
    out: dict[int, list[str]] = {}
    for i, rule in enumerate(config.rules):
        if rule.judge and known_judges is not None and rule.judge not in known_judges:
            out.setdefault(i, []).append(f"quality_alerts.rules[{i}].judge: no config has a judge {rule.judge!r} (known: {', '.join(sorted(known_judges))}); rule '{rule.label}' cannot fire")
        if rule.node and known_nodes is not None and rule.node not in known_nodes:
            out.setdefault(i, []).append(f"quality_alerts.rules[{i}].node: no config has a node {rule.node!r} (known: {', '.join(sorted(known_nodes))}); rule '{rule.label}' cannot fire")
    return out


def rule_warnings(config: QualityAlertsConfig, *, known_judges: set[str] | None, known_nodes: set[str] | None) -> list[str]:
    """Rules naming a judge or node no config has: they can never fire, so they are not evaluated (a warning, not an error)."""
    return [w for problems in rule_problems(config, known_judges=known_judges, known_nodes=known_nodes).values() for w in problems]


def delivery_lines(outcome: RuleOutcome) -> list[str]:
    """``sent firing to webhook#0 (host)`` for the sinks that accepted it in this check; attempts and the last
    error for each sink still owed it. Sinks told in an earlier check are not listed again."""
    lines = []
    now = [d for d in outcome.deliveries if d.sent_now]
    if now:
        lines.append(f"sent {now[0].status} to " + ", ".join(d.sink for d in now))
    for d in outcome.deliveries:
        if d.in_flight:
            lines.append(f"{d.status} to {d.sink}: being sent by another check (attempts so far: {d.attempts})")
        elif not d.delivered:
            lines.append(f"{d.status} NOT delivered to {d.sink}: {d.attempts} attempt(s), last error: {d.last_error}; tried again at the next check")
    return lines


def watched_experiment(config: QualityAlertsConfig, experiment: str | None = None) -> str | None:
    """The experiment to check: the argument, ``quality_alerts.experiment``, else MLflow's environment variables."""
    return experiment or config.experiment or Settings.from_env().experiment


def known_names(config: Any) -> tuple[set[str], set[str]]:
    """Judges and nodes the config names (for the warnings); with no judges named, the default plan's.

    >>> from tracejudge.config import TraceJudgeConfig
    >>> sorted(known_names(TraceJudgeConfig())[0])
    ['coherence', 'harmfulness', 'relevance']
    """
    from tracejudge.config import DEFAULT_ROOT_JUDGES

    judges = set(config.judge_names()) | {j.name for j in config.judges.custom}
    if not config.has_plan:
        judges.update(DEFAULT_ROOT_JUDGES)
    nodes = set(config.judges.node_overrides) | {"workflow"}
    return judges, nodes


def run_check_cli(*, config: str | None, experiment: str | None, as_json: bool, queues: tuple[str, ...] = ()) -> int:
    """``tracejudge alerts check --once``: 0 quiet, 1 a rule holds, 2 cannot check."""
    from tracejudge.config import ConfigError, load_config
    from tracejudge.mlflow_io.query import ExperimentNotFound
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.monitor.dashboard import _redis

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    alerts = loaded.quality_alerts
    if not alerts.active:
        print(f"error: {loaded.location('quality_alerts')}: no rules to check (add quality_alerts.rules to the config)", file=sys.stderr)
        return 2
    target = watched_experiment(alerts, experiment)
    if not target:
        print("error: which experiment? give --experiment-id, quality_alerts.experiment or MLFLOW_EXPERIMENT_ID", file=sys.stderr)
        return 2
    redis = _redis()
    if redis is None:
        print("error: alerts need Redis (deduplication); none answers at TRACEJUDGE_REDIS_URL", file=sys.stderr)
        return 2
    judges, nodes = known_names(loaded)
    try:
        result = check_alerts(alerts, experiment=target, redis=redis, known_judges=judges, known_nodes=nodes, queues=queues)
    except (ExperimentNotFound, MlflowUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        for o in result.outcomes:
            mark = "FIRING " if o.holds else ("ok     " if o.checked else "skipped")
            print(f"{mark} {o.rule}: {o.message}")
            for line in delivery_lines(o):
                print(f"        {line}")
    return 1 if result.firing else 0
