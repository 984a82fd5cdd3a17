"""The verdict on one trace, the quality gate, and the quality report.

:func:`build_verdict` turns judge results into a :class:`QualityVerdict`
(JSON, the Celery task's result). The rule, for the gating judges (those
listed in ``quality_gate.judges``, else all):

* any of them errored -> ``error`` (a judge error never counts as a pass),
  unless ``quality_gate.on_error: ignore``;
* their mean score is at least the threshold and each passed its own
  threshold -> ``passed``; otherwise ``failed``.

A gating judge (named in ``quality_gate.judges``) that ran on no target of
the trace makes the verdict ``error`` (``GATE_JUDGE_NOT_RUN``): a gate on a
judge that never ran must not pass. A gating judge that per-judge sampling
(``judges.sampling.judges``) left out of this trace is not "not run": the
user chose it; the status is decided on the gating judges that ran, and the
verdict names the sampled-out ones (``gate_judges_sampled_out``). When every
gating judge was sampled out, the verdict is ``skipped`` (nothing to gate on).

The threshold is ``quality_gate.threshold`` when the gate is enabled, else
the environment threshold. :func:`apply_gate` acts on ``quality_gate.action``.

The numbers (design sections 2.1, 2.2, 3.2), the same in the report and the run metrics:

* ``gate_score`` (the report's ``overall_quality.score``, the verdict's
  ``overall_score``): the mean score of the gating judges, what the status is decided on;
* a node's score: the mean of its judges' scores (``node_quality_score/<node>``);
* ``mean_quality_score``: the mean of all judges' scores on all targets;
* ``min_quality_score``: the lowest node score;
* ``quality_threshold_pass``: 1.0 when every node met its threshold (each of its
  judges scored and passed), else 0.0;
* a judge's ``aggregations`` (``<judge>/mean``, ``<judge>/variance``...): over
  that judge's scores on all the targets it ran on;
* the tool metrics, when the trace made tool calls (design sections 2.3 and 6.2, counted from its spans
  without an LLM call; :class:`tracejudge.judges.trajectory.ToolUsage`): ``total_tool_calls``,
  ``tool_failed_calls``, ``tool_retries``, ``unique_tools_used``, ``tool_success_rate``,
  ``tool_total_duration_ms``, ``tool_avg_duration_ms``, per tool ``tool_calls/<tool>``,
  ``tool_failed_calls/<tool>``, ``tool_avg_duration_ms/<tool>``, per node ``node_tool_calls/<node>``,
  ``node_tool_failed_calls/<node>``.

Scores are on the "higher is better" scale (a lower-is-better judge counts as ``1 - score``).
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tracejudge.config import TraceJudgeConfig, redact_url
from tracejudge.judges.model import Aggregate, ErrorInfo, JudgeResult, aggregate, quality_band, utc_now
from tracejudge.judges.trajectory import ToolUsage

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "error", "skipped"]

NO_SCORES = "NO_SCORES"
GATE_JUDGE_NOT_RUN = "GATE_JUDGE_NOT_RUN"


class TargetVerdict(BaseModel):
    """All judge results of one target (design section 4.6)."""

    node_id: str
    span_id: str | None = None
    judges: list[JudgeResult]
    aggregate: Aggregate

    @property
    def score(self) -> float | None:
        """The node's score: the mean of its judges' scores (design section 2.2)."""
        return self.aggregate.mean_score

    @property
    def met_threshold(self) -> bool:
        """Every judge of the node scored and passed its threshold."""
        return self.aggregate.all_passed


class QualityVerdict(BaseModel):
    """What a caller waiting on an evaluation gets back.

    >>> v = QualityVerdict(trace_id="tr-1", status="passed", overall_score=0.9, threshold=0.8)
    >>> v.passed
    True
    """

    trace_id: str
    evaluation_id: str | None = None
    status: Status
    overall_score: float | None = None
    threshold: float
    band: str | None = None
    workflow_name: str | None = None
    targets: list[TargetVerdict] = Field(default_factory=list)
    failures: list[JudgeResult] = Field(default_factory=list)
    errors: list[JudgeResult] = Field(default_factory=list)
    error: ErrorInfo | None = None
    retry_nodes: list[str] = Field(default_factory=list)
    gate_judges: list[str] = Field(default_factory=list)
    #: Gating judges that per-judge sampling (``judges.sampling.judges``) left out of this trace: not
    #: held against it; the status is decided on the gating judges that ran.
    gate_judges_sampled_out: list[str] = Field(default_factory=list)
    #: Per judge that asked for ``aggregations``: each over its scores on all its targets.
    judge_aggregates: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: Things the caller should know that do not change the status (a node_overrides key matching no node...).
    warnings: list[str] = Field(default_factory=list)
    #: 1 for a first run; a re-run (``enqueue(..., retry_of=...)``) counts on from its parent.
    attempt: int = 1
    retry_of: str | None = None
    #: True when quality_retry.max_retries re-runs are used up (``retry_nodes`` is then empty).
    retries_exhausted: bool = False
    #: A one-off run of some judges (``judges=`` / ``--judges``): its assessments are written, but the
    #: trace's verdict tags, report and run metrics stay those of the full evaluation.
    partial: bool = False
    artifact_uri: str | None = None
    judged: int = 0
    reused: int = 0
    #: Why a ``skipped`` trace was left out (sampling, a filter).
    skipped_reason: str | None = None
    #: The trace's tool calls counted (None: it made none, or was not read).
    tool_usage: ToolUsage | None = None
    evaluated_at: str = Field(default_factory=utc_now)

    @model_validator(mode="before")
    @classmethod
    def _from_result(cls, data: Any) -> Any:
        """Read the compact task result (:meth:`to_result`) back: drop the summary line,
        rebuild ``failures`` and ``errors`` from the targets."""
        if isinstance(data, Mapping) and "summary" in data:
            data = {k: v for k, v in data.items() if k != "summary"}
            results = [r for t in data.get("targets", []) for r in t.get("judges", [])]
            data.setdefault("failures", [r for r in results if not r.get("error") and not r.get("passed")])
            data.setdefault("errors", [r for r in results if r.get("error")])
        return data

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def results(self) -> list[JudgeResult]:
        return [r for t in self.targets for r in t.judges]

    def summary(self) -> str:
        score = "n/a" if self.overall_score is None else f"{self.overall_score:.3f}"
        text = f"{self.status.upper()}: score {score} (threshold {self.threshold:g}, {self.band or 'no band'})"
        if self.error:
            text += f"; {self.error.type}: {self.error.message}"
        if self.failures:
            gating = set(self.gate_judges)
            text += "; below threshold: " + ", ".join(
                f"{r.target}/{r.name}={r.score:.2f}" + ("" if not gating or r.name in gating else " (not gating)")
                for r in self.failures
                if r.score is not None
            )
        if self.errors:
            text += "; judge errors: " + ", ".join(f"{r.target}/{r.name} {r.error.type}" for r in self.errors if r.error)
        if self.retries_exhausted:
            text += f"; quality retries used up (attempt {self.attempt})"
        if self.partial:
            text += "; partial run (judges=...): the trace's full verdict, tags and report are unchanged"
        return text

    def headline(self) -> str:
        """One line for lists and searches (Flower's result column): status, score, band,
        failing judges and error codes only, so a passed verdict never reads like a failed one.

        >>> QualityVerdict(trace_id="tr-1", status="passed", overall_score=0.9, threshold=0.8, band="Excellent").headline()
        'PASSED score=0.900 band=Excellent'
        """
        score = "n/a" if self.overall_score is None else f"{self.overall_score:.3f}"
        parts = [self.status.upper(), f"score={score}", f"band={(self.band or 'none').replace(' ', '_')}"]
        failing = [f"{r.target}/{r.name}" for r in self.failures]
        if failing:
            parts.append("below=" + ",".join(failing))
        codes = sorted({r.error.type for r in self.errors if r.error} | ({self.error.type} if self.error else set()))
        if codes:
            parts.append("codes=" + ",".join(codes))
        if self.retries_exhausted:
            parts.append("retries_exhausted")
        return " ".join(parts)

    def to_result(self) -> dict[str, Any]:
        """The compact JSON the Celery task returns: ``summary`` (:meth:`headline`) first, no
        fields left at their defaults, no copies (``failures``/``errors`` are rebuilt from the targets on reading).

        >>> v = QualityVerdict(trace_id="tr-1", status="passed", overall_score=0.9, threshold=0.8)
        >>> list(v.to_result())[:2], QualityVerdict.model_validate(v.to_result()) == v
        (['summary', 'trace_id'], True)
        """
        body = self.model_dump(mode="json", exclude_defaults=True, exclude={"failures", "errors"})
        # (times have a default factory: keep them even when they equal "now")
        body["evaluated_at"] = self.evaluated_at
        for target, dumped in zip(self.targets, body.get("targets", [])):
            for result, judge in zip(target.judges, dumped["judges"]):
                judge["timestamp"] = result.timestamp
        return {"summary": self.headline(), **body}


class QualityGateBlocked(Exception):
    """Raised by the gate (``action: block``) when a verdict is not ``passed``; carries the verdict."""

    def __init__(self, verdict: QualityVerdict) -> None:
        super().__init__(f"quality gate blocked trace {verdict.trace_id}: {verdict.summary()}")
        self.verdict = verdict


def build_verdict(
    trace_id: str,
    results: list[JudgeResult],
    config: TraceJudgeConfig,
    *,
    evaluation_id: str | None = None,
    workflow_name: str | None = None,
    environment: str | None = None,
    reused: int = 0,
    aggregations: Mapping[str, Sequence[str]] | None = None,
    warnings: Sequence[str] = (),
    attempt: int = 1,
    retry_of: str | None = None,
    partial: bool = False,
    variance: bool = False,
    sampled_out: Sequence[str] = (),
    tool_usage: ToolUsage | None = None,
) -> QualityVerdict:
    """Aggregate results per target and decide the status (see the module docstring).

    ``aggregations`` maps a judge name to the aggregations it asked for (``mean``,
    ``variance``...), computed over its scores on all its targets. ``attempt`` is the
    run's number (a re-run of a trace counts on from its parent, ``retry_of``).
    ``partial`` (a one-off run of some judges) does not hold gating judges it did
    not run against the verdict. ``variance`` is accepted for old callers and ignored.

    >>> from tracejudge.judges.model import JudgeResult
    >>> r = [JudgeResult(name="coherence", target="write", score=0.9, threshold=0.8, passed=True)]
    >>> cfg = TraceJudgeConfig.model_validate({"quality_gate": {"enabled": True, "judges": ["coherence", "harmfulness"]}})
    >>> v = build_verdict("tr-1", r, cfg)
    >>> v.status, v.error.type
    ('error', 'GATE_JUDGE_NOT_RUN')
    >>> v = build_verdict("tr-1", r, cfg, sampled_out=["harmfulness"])
    >>> v.status, v.gate_judges_sampled_out
    ('passed', ['harmfulness'])
    """
    gate = config.quality_gate
    gate_on = config.gate_enabled
    gate_names = set(gate.judges) if gate_on and gate.judges else None
    gating = [r for r in results if gate_names is None or r.name in gate_names]
    if partial and not gating:  # a partial run (judges=...) of no gating judge: judged on what it ran
        gating = list(results)
    threshold = gate.threshold if gate_on else config.environment_threshold(environment)
    errors = [r for r in results if r.error is not None]
    gating_errors = [r for r in gating if r.error is not None]
    ignore_errors = gate.on_error == "ignore"
    scored = [r.quality for r in gating if r.quality is not None]
    overall = round(statistics.fmean(scored), 6) if scored else None
    ran = {r.name for r in results}
    sampled = set(sampled_out) - ran
    gate_sampled_out = sorted(sampled if gate_names is None else sampled & gate_names)
    not_run = sorted(gate_names - ran - sampled) if gate_names is not None and not partial else []

    error: ErrorInfo | None = None
    skipped_reason: str | None = None
    if not_run:
        status: Status = "error"
        nodes = ", ".join(sorted({r.target for r in results})) or "none"
        error = ErrorInfo(
            type=GATE_JUDGE_NOT_RUN,
            message=(
                f"quality_gate.judges lists {', '.join(not_run)}, which ran on no target of this trace "
                f"(targets judged: {nodes}); add it to judges.workflow_defaults or to node_overrides of a node the trace has"
            ),
        )
    elif gating_errors and not ignore_errors:
        status = "error"
    elif not gating and gate_sampled_out:
        status = "skipped"
        skipped_reason = (
            f"every gating judge was sampled out on this trace ({', '.join(gate_sampled_out)}; judges.sampling.judges)"
        )
    elif overall is None:
        status = "error"
        if not gating_errors or ignore_errors:
            error = ErrorInfo(
                type=NO_SCORES,
                message=(
                    "no gating judge produced a score for this trace"
                    + (f" (gating judges: {', '.join(sorted(gate_names))})" if gate_names else "")
                ),
            )
    elif overall >= threshold and all(r.passed for r in gating if r.error is None):
        status = "passed"
    else:
        status = "failed"

    targets: dict[str, list[JudgeResult]] = {}
    for r in results:
        targets.setdefault(r.target, []).append(r)

    nodes_below = retry_nodes(results, config)
    notes = list(warnings)
    exhausted = False
    retries = config.quality_retry.max_retries
    if nodes_below and attempt > retries:
        exhausted = True
        notes.append(
            f"quality_retry: {', '.join(nodes_below)} still below {config.quality_retry.threshold:g} after "
            f"{attempt - 1} retr{'y' if attempt == 2 else 'ies'} (max_retries {retries}); not asking for another"
        )
        nodes_below = []
    return QualityVerdict(
        trace_id=trace_id,
        evaluation_id=evaluation_id,
        status=status,
        overall_score=overall,
        threshold=threshold,
        band=quality_band(overall),
        workflow_name=workflow_name,
        targets=[
            TargetVerdict(node_id=node, span_id=rs[0].span_id, judges=rs, aggregate=aggregate(rs))
            for node, rs in targets.items()
        ],
        failures=[r for r in results if r.error is None and not r.passed],
        errors=errors,
        error=error,
        retry_nodes=nodes_below,
        gate_judges=sorted(gate_names) if gate_names else [],
        judge_aggregates=judge_aggregates(results, aggregations or {}),
        warnings=notes,
        attempt=attempt,
        retry_of=retry_of,
        retries_exhausted=exhausted,
        partial=partial,
        reused=reused,
        judged=len(results) - reused,
        gate_judges_sampled_out=gate_sampled_out,
        skipped_reason=skipped_reason,
        tool_usage=tool_usage,
    )


def judge_aggregates(results: list[JudgeResult], aggregations: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Each judge's requested aggregations over its scores on all the targets it ran on.

    >>> from tracejudge.judges.model import JudgeResult
    >>> rs = [JudgeResult(name="tone", target=t, score=s, threshold=0.5) for t, s in (("a", 0.2), ("b", 0.6))]
    >>> judge_aggregates(rs, {"tone": ["mean", "variance", "max"]})
    {'tone': {'mean': 0.4, 'variance': 0.04, 'max': 0.6}}
    """
    out: dict[str, dict[str, float]] = {}
    for name, wanted in aggregations.items():
        scores = [r.quality for r in results if r.name == name and r.quality is not None]
        if not wanted or not scores:
            continue
        values: dict[str, float] = {}
        for kind in wanted:
            value = _AGGREGATIONS[kind](scores)
            values[kind] = round(value, 6)
        out[name] = values
    return out


def _p90(scores: list[float]) -> float:
    ordered = sorted(scores)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


_AGGREGATIONS: dict[str, Any] = {
    "mean": statistics.fmean,
    "variance": statistics.pvariance,
    "min": min,
    "max": max,
    "median": statistics.median,
    "p90": _p90,
}


def unmatched_override_warnings(config: TraceJudgeConfig, node_ids: Sequence[str]) -> list[str]:
    """A warning per ``node_overrides`` key that matches no node of the trace (its judges never ran).

    >>> cfg = TraceJudgeConfig.model_validate({"judges": {"node_overrides": {"write": ["coherence"]}}})
    >>> unmatched_override_warnings(cfg, ["workflow", "research"])[0].split(" (")[0]
    'observability.mlflow.judges.node_overrides.write matches no node of this trace'
    >>> unmatched_override_warnings(cfg, ["workflow", "write"])
    []
    """
    present = [n for n in node_ids if n != "workflow"]
    listing = ", ".join(present) or "none: only the workflow root"
    where = config.location("judges")
    return [
        f"{where}.node_overrides.{node} matches no node of this trace (nodes: {listing}); its judges did not run. "
        "A span becomes node <id> when it is named node_<id> or has the attribute node.id"
        for node in config.judges.node_overrides
        if node not in node_ids
    ]


def error_verdict(
    trace_id: str, code: str, message: str, config: TraceJudgeConfig, *, environment: str | None = None, **fields: Any
) -> QualityVerdict:
    """The verdict of an evaluation that could not run at all (unknown trace, bad payload...).

    URLs in the message have their passwords hidden (a tracking URI can carry one).

    >>> error_verdict("tr-1", "TRACE_NOT_FOUND", "not in postgresql://u:pw@db/x", TraceJudgeConfig()).error.message
    'not in postgresql://u:***@db/x'
    """
    threshold = config.quality_gate.threshold if config.gate_enabled else config.environment_threshold(environment)
    return QualityVerdict(
        trace_id=str(trace_id),
        status="error",
        threshold=threshold,
        error=ErrorInfo(type=code, message=redact_url(message)),
        **fields,
    )


def skipped_verdict(trace_id: str, reason: str, config: TraceJudgeConfig, **fields: Any) -> QualityVerdict:
    """The verdict of a trace that sampling or a filter left out: status ``skipped``, never a pass.

    >>> from tracejudge.config import TraceJudgeConfig
    >>> skipped_verdict("tr-1", "sampled out", TraceJudgeConfig()).status
    'skipped'
    """
    threshold = config.quality_gate.threshold if config.gate_enabled else config.environment_threshold()
    return QualityVerdict(trace_id=str(trace_id), status="skipped", threshold=threshold, skipped_reason=reason, **fields)


def cost_summary(results: list[JudgeResult]) -> dict[str, Any]:
    """What the judges of one trace cost: USD (None when no model had a price) and tokens.

    >>> cost_summary([JudgeResult(name="a", threshold=0.5, cost_usd=0.001), JudgeResult(name="b", threshold=0.5)])
    {'judge_cost_usd': 0.001, 'prompt_tokens': 0, 'completion_tokens': 0, 'cached_calls': 0}
    """
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    return {
        "judge_cost_usd": round(sum(costs), 9) if costs else None,
        "prompt_tokens": sum(r.tokens.prompt for r in results if not r.cached),
        "completion_tokens": sum(r.tokens.completion for r in results if not r.cached),
        "cached_calls": sum(1 for r in results if r.cached),
    }


def retry_nodes(results: list[JudgeResult], config: TraceJudgeConfig) -> list[str]:
    """Nodes whose ``quality_retry`` judges scored below its threshold (design section 5.4)."""
    retry = config.quality_retry
    if not config.retry_enabled:
        return []
    names = set(retry.judges) if retry.judges else None
    nodes: list[str] = []
    for r in results:
        if names is not None and r.name not in names:
            continue
        if r.quality is not None and r.quality < retry.threshold and r.target not in nodes and r.target != "workflow":
            nodes.append(r.target)
    return nodes


def apply_gate(verdict: QualityVerdict, config: TraceJudgeConfig, *, raise_on_block: bool = True) -> QualityVerdict:
    """Act on ``quality_gate.action``: ``block`` raises :class:`QualityGateBlocked` unless passed,
    ``warn`` logs a warning, ``ignore`` just returns.
    """
    gate = config.quality_gate
    if verdict.passed or not config.gate_enabled or gate.action == "ignore":
        return verdict
    if gate.action == "warn":
        log.warning("quality gate (warn): %s", verdict.summary())
        return verdict
    if raise_on_block:
        raise QualityGateBlocked(verdict)
    return verdict


def quality_report(verdict: QualityVerdict) -> dict[str, Any]:
    """``quality_assessment.json`` (design section 3.2), plus status, band, per-node scores,
    errors, warnings and ``metrics`` (exactly the run metrics, see the module docstring)."""
    assessments = []
    recommendations = []
    for r in verdict.results():
        entry: dict[str, Any] = {
            "node_id": r.target,
            "judge": r.name,
            "score": r.score,
            "rationale": r.rationale,
            "passed": r.passed,
            "threshold": r.threshold,
            "span_id": r.span_id,
        }
        if r.error is not None:
            entry["error"] = r.error.model_dump()
            recommendations.append(f"{r.target}: {r.name} could not be evaluated ({r.error.type}): {r.error.message}")
        elif not r.passed and r.score is not None:
            advice = f": {r.rationale}" if r.rationale else ""
            recommendations.append(f"{r.target}: improve {r.name} (scored {r.score:.2f}, threshold {r.threshold:g}){advice}")
        assessments.append(entry)
    report: dict[str, Any] = {
        "workflow_name": verdict.workflow_name,
        "trace_id": verdict.trace_id,
        "evaluation_id": verdict.evaluation_id,
        "assessment_timestamp": verdict.evaluated_at,
        "overall_quality": {
            "score": verdict.overall_score,
            "score_of": (
                f"mean of the gating judges ({', '.join(verdict.gate_judges)})" if verdict.gate_judges else "mean of all judges"
            ),
            "threshold": verdict.threshold,
            "passed": verdict.passed,
            "status": verdict.status,
            "band": verdict.band,
        },
        "node_scores": [
            {"node_id": t.node_id, "span_id": t.span_id, "score": t.score, "met_threshold": t.met_threshold}
            for t in verdict.targets
        ],
        "node_assessments": assessments,
        "judge_aggregates": verdict.judge_aggregates,
        "metrics": quality_metrics(verdict),
        "recommendations": recommendations,
        "retry_nodes": verdict.retry_nodes,
        "attempt": verdict.attempt,
        "warnings": verdict.warnings,
        "cost": cost_summary(verdict.results()),
    }
    if verdict.tool_usage is not None:
        report["tool_usage"] = verdict.tool_usage.report()
    if verdict.error is not None:
        report["error"] = verdict.error.model_dump()
    if verdict.retry_of:
        report["retry_of"] = verdict.retry_of
    return report


_METRIC_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_name(*parts: str) -> str:
    """A run metric name from parts, characters MLflow refuses replaced by ``_``.

    >>> metric_name("node_quality_score", "research:v2")
    'node_quality_score/research_v2'
    """
    return "/".join(_METRIC_NAME_UNSAFE.sub("_", part) for part in parts)


def quality_metrics(verdict: QualityVerdict) -> dict[str, float]:
    """The run metrics (design sections 2.1 and 2.2; the module docstring says what each means).

    >>> from tracejudge.judges.model import JudgeResult
    >>> rs = [JudgeResult(name="a", target="n1", score=0.9, threshold=0.8, passed=True),
    ...       JudgeResult(name="b", target="n1", score=0.5, threshold=0.4, passed=True),
    ...       JudgeResult(name="a", target="n2", score=0.62, threshold=0.75, passed=False)]
    >>> m = quality_metrics(build_verdict("tr-1", rs, TraceJudgeConfig()))
    >>> m["quality_threshold_pass"], m["min_quality_score"], m["node_quality_score/n1"]
    (0.0, 0.62, 0.7)
    """
    node_scores = {t.node_id: t.score for t in verdict.targets}
    all_scores = [r.quality for r in verdict.results() if r.quality is not None]
    metrics: dict[str, float] = {
        "quality_threshold_pass": 1.0 if verdict.targets and all(t.met_threshold for t in verdict.targets) else 0.0
    }
    if verdict.overall_score is not None:
        metrics["gate_score"] = verdict.overall_score
    if all_scores:
        metrics["mean_quality_score"] = round(statistics.fmean(all_scores), 6)
    scored_nodes = [s for s in node_scores.values() if s is not None]
    if scored_nodes:
        metrics["min_quality_score"] = min(scored_nodes)
    for node, score in node_scores.items():
        if score is not None:
            metrics[metric_name("node_quality_score", node)] = score
    for judge, values in verdict.judge_aggregates.items():
        for kind, value in values.items():
            metrics[metric_name(judge, kind)] = value
    cost = cost_summary(verdict.results())
    if cost["judge_cost_usd"] is not None:
        metrics["judge_cost_usd"] = cost["judge_cost_usd"]
    metrics["judge_prompt_tokens"] = float(cost["prompt_tokens"])
    metrics["judge_completion_tokens"] = float(cost["completion_tokens"])
    if verdict.tool_usage is not None:
        for name, value in verdict.tool_usage.metrics().items():
            metrics[metric_name(*name.split("/", 1))] = value
    return metrics
