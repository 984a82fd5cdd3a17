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
import urllib.request
from typing import Any, Literal

from pydantic import BaseModel, Field

from tracejudge.config import Settings
from tracejudge.config.alerts import AlertRule, AlertSink, QualityAlertsConfig
from tracejudge.monitor.models import JudgeStats, NodeStats, QualitySummary
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
    sent: Literal["firing", "resolved"] | None = None


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
    blob = json.dumps([experiment_id, rule.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _scoped(summary: QualitySummary, rule: AlertRule) -> tuple[int, float | None, float | None, int, float | None]:
    """(count, mean, variance, below, failure_rate) of the rule's scope."""
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


def evaluate_rule(rule: AlertRule, window: QualitySummary, baseline: QualitySummary) -> tuple[bool, Any, Any, str]:
    """Whether the rule holds, the observed and baseline figures, and a sentence saying so."""
    n, mean, var, below, rate = _scoped(window, rule)
    bn, bmean, bvar, _, brate = _scoped(baseline, rule)
    scope = " ".join(x for x in (f"node {rule.node}" if rule.node else "", rule.judge or "") if x) or "all judges"
    if rule.kind == "gate_pass_rate":
        observed, base = window.totals.gate_pass_rate, baseline.totals.gate_pass_rate
        holds = window.totals.traces >= rule.min_count and observed is not None and observed < (rule.below or 0)
        return holds, observed, base, f"gate pass rate {_f(observed)} (baseline {_f(base)}), alert below {rule.below:g}"
    if rule.kind == "new_failure_type":
        new_codes = sorted(set(window.error_codes) - set(baseline.error_codes))
        seen = {(x.node, x.judge) for x in baseline.nodes if x.below}
        new_pairs = sorted(
            f"{x.node}/{x.judge}" for x in window.nodes
            if x.below and (x.node, x.judge) not in seen
            and (rule.node is None or x.node == rule.node) and (rule.judge is None or x.judge == rule.judge)
        )
        observed = new_codes + new_pairs
        return bool(observed), observed, sorted(baseline.error_codes), (
            "new failure types: " + ", ".join(observed) if observed else "no failure type unseen in the baseline"
        )
    if n < rule.min_count:
        return False, mean, bmean, f"{scope}: {n} scored results in the window (rule needs {rule.min_count})"
    if rule.kind == "quality_drop":
        if rule.below is not None and mean is not None and mean < rule.below:
            return True, mean, bmean, f"{scope}: mean {_f(mean)} below {rule.below:g} (baseline {_f(bmean)})"
        if rule.drop_by is not None and bmean is not None and mean is not None and bmean - mean >= rule.drop_by - 1e-12:
            return True, mean, bmean, f"{scope}: mean {_f(mean)} is {bmean - mean:.3f} under the baseline {_f(bmean)} (alert at {rule.drop_by:g})"
        return False, mean, bmean, f"{scope}: mean {_f(mean)} (baseline {_f(bmean)})"
    if rule.kind == "failure_rate":
        holds = rate is not None and rate > (rule.above or 0)
        return holds, rate, brate, f"{scope}: {_f(rate)} below threshold (baseline {_f(brate)}), alert above {rule.above:g}"
    if rule.kind == "variance_increase":
        holds = var is not None and bvar is not None and bn >= rule.min_count and var > (rule.factor or 0) * max(bvar, 1e-6)
        return holds, var, bvar, f"{scope}: variance {_f(var)} vs baseline {_f(bvar)} (alert at x{rule.factor:g})"
    raise ValueError(f"unknown rule kind {rule.kind!r}")  # pragma: no cover - the config refuses it


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
) -> CheckResult:
    """Check every rule once, send what changed, and return each rule's outcome."""
    from tracejudge.monitor.collect import summarise_quality

    prefix = Settings.from_env().key_prefix if prefix is None else prefix
    summarise = summarise or (lambda q, now: summarise_quality(q, redis=redis, prefix=prefix, now_ms=now))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    window_ms = config.window_minutes * 60_000
    start = now_ms - window_ms
    base_start = start - int(config.baseline_days * 86_400_000)
    window = summarise(MonitorQuery(experiment=experiment, workflow=config.workflow, since=iso(start), until=iso(now_ms), bucket="hour"), now_ms)
    baseline = summarise(
        MonitorQuery(experiment=experiment, workflow=config.workflow, since=iso(base_start), until=iso(start), bucket="day"), now_ms
    )
    warnings = rule_warnings(config, known_judges=known_judges, known_nodes=known_nodes)
    for w in warnings:
        log.warning(w)
    outcomes = []
    for rule in config.rules:
        rid = rule_id(rule, window.experiment_id)
        holds, observed, base, message = evaluate_rule(rule, window, baseline)
        outcome = RuleOutcome(rule=rule.label, rule_id=rid, holds=holds, observed=observed, baseline=base, message=message)
        key = f"{prefix}{STATE_KEY}{window.experiment_id}:{rid}"
        status: Literal["firing", "resolved"] | None = None
        if holds and redis.set(key, json.dumps({"since": iso(now_ms), "rule": rule.label}), nx=True):
            status = "firing"
        elif not holds and redis.delete(key):
            status = "resolved"
        if status:
            alert = Alert(
                status=status,
                rule=rule.label,
                rule_id=rid,
                kind=rule.kind,
                experiment_id=window.experiment_id,
                window={"since": window.since, "until": window.until},
                baseline_window={"since": baseline.since, "until": baseline.until},
                observed=observed,
                baseline=base,
                message=("RESOLVED: " if status == "resolved" else "") + message,
                examples=_examples(window, rule) if status == "firing" else [],
                links={"quality": window.links.experiment_quality, "traces": window.links.experiment_traces},
            )
            send(alert, config.sinks)
            outcome.sent = status
        outcomes.append(outcome)
    return CheckResult(experiment_id=window.experiment_id, window={"since": window.since, "until": window.until}, outcomes=outcomes, warnings=warnings)


def rule_warnings(config: QualityAlertsConfig, *, known_judges: set[str] | None, known_nodes: set[str] | None) -> list[str]:
    """Rules naming a judge or node no config has: they can never fire (a warning, not an error)."""
    out = []
    for i, rule in enumerate(config.rules):
        if rule.judge and known_judges is not None and rule.judge not in known_judges:
            out.append(f"quality_alerts.rules[{i}].judge: no config has a judge {rule.judge!r} (known: {', '.join(sorted(known_judges))}); rule '{rule.label}' cannot fire")
        if rule.node and known_nodes is not None and rule.node not in known_nodes:
            out.append(f"quality_alerts.rules[{i}].node: no config has a node {rule.node!r} (known: {', '.join(sorted(known_nodes))}); rule '{rule.label}' cannot fire")
    return out


def send(alert: Alert, sinks: list[AlertSink]) -> None:
    """Send to every sink; a sink that still fails after its retries is logged, the others still get it."""
    for sink in sinks:
        try:
            if sink.type == "log":
                log.warning("quality alert %s: %s", alert.status, alert.message)
            elif sink.type == "webhook":
                _post(sink, alert.model_dump(mode="json"))
            else:
                _post(sink, slack_payload(alert))
        except Exception as exc:
            log.error("quality alert sink %s failed after %d attempts: %s", sink.type, sink.max_attempts, exc)


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack-compatible message (``text`` with links in Slack's ``<url|label>`` form)."""
    icon = ":white_check_mark:" if alert.status == "resolved" else ":rotating_light:"
    lines = [f"{icon} *{alert.status.upper()}* quality alert `{alert.rule}` (experiment {alert.experiment_id})", alert.message,
             f"window {alert.window['since']} .. {alert.window['until']}"]
    lines += [f"• <{e['url']}|{e['trace_id']}> {e.get('node') or ''} {e.get('judge') or ''} {'' if e.get('score') is None else round(e['score'], 3)}" for e in alert.examples]
    if alert.links.get("quality"):
        lines.append(f"<{alert.links['quality']}|MLflow Quality tab>")
    return {"text": "\n".join(lines)}


def _post(sink: AlertSink, payload: dict[str, Any]) -> None:
    from tenacity import retry, stop_after_attempt, wait_exponential

    body = json.dumps(payload).encode()

    @retry(stop=stop_after_attempt(sink.max_attempts), wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
    def post() -> None:
        request = urllib.request.Request(sink.url or "", data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=sink.timeout_seconds) as response:
            response.read()

    post()


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


def run_check_cli(*, config: str | None, experiment: str | None, as_json: bool) -> int:
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
        result = check_alerts(alerts, experiment=target, redis=redis, known_judges=judges, known_nodes=nodes)
    except (ExperimentNotFound, MlflowUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        for o in result.outcomes:
            mark = "FIRING " if o.holds else "ok     "
            sent = f"  [sent {o.sent}]" if o.sent else ""
            print(f"{mark} {o.rule}: {o.message}{sent}")
    return 1 if result.firing else 0
