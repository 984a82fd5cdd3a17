"""A trace's record in MLflow (verdict tags, our feedbacks) as the monitor counts it, on both sides.

:func:`trace_record` is the one reading of the record: the MLflow source applies it to what ``search_traces``
returns, and a worker applies it to what the trace holds once its write-back lands (:func:`record_after_writeback`:
the assessments it read, minus those its new feedbacks supersede, plus the new feedbacks, and the tags it wrote).
Both then sum :func:`tracejudge.monitor.rollup.contribution` of it, in memory or in Redis by replacement, so the
two sources agree figure by figure after any sequence of re-judgings.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterable, Mapping

from tracejudge.judges.model import quality_band
from tracejudge.mlflow_io.query import ENVIRONMENT_TAG, AssessmentRow, JudgedTraceRow, judged_row
from tracejudge.monitor.rollup import ResultRecord, TraceRecord

#: The environment of a trace whose record names none (the evaluation's default, ``judges.environment``).
DEFAULT_ENVIRONMENT = "production"


def trace_record(row: JudgedTraceRow, *, environment: str | None = None) -> TraceRecord:
    """A :class:`TraceRecord` from a judged trace's record (its tags and our assessments).

    ``environment``: when the record names none (the ``tracejudge.environment`` tag or an ``environment`` in the
    feedback metadata), the one it was judged for; else ``production``.
    """
    tags = row.tags
    score = _float(tags.get("tracejudge.score"))
    named = tags.get(ENVIRONMENT_TAG) or next(
        (a.metadata["environment"] for a in row.assessments if a.metadata.get("environment")), ""
    )
    results = [
        ResultRecord(
            judge=a.name,
            node=a.node,
            score=a.value,
            threshold=a.threshold,
            passed=a.passed,
            error_code=a.error_code,
            rationale=a.rationale,
            cost_usd=_float(a.metadata.get("cost_usd")),
        )
        for a in newest_per_target(row.assessments)
    ]
    return TraceRecord(
        trace_id=row.trace_id,
        timestamp_ms=row.timestamp_ms,
        workflow=row.workflow,
        environment=named or environment or DEFAULT_ENVIRONMENT,
        status=tags.get("tracejudge.status") or None,
        score=score,
        # workers write only the status and score tags now; the band is the score's (older traces carry the tag)
        band=tags.get("tracejudge.band") or quality_band(score),
        results=results,
        failed_evaluations=row.failed_evaluations,
        tools=dict(row.tools) if row.tools else {},
    )


def newest_per_target(assessments: list[AssessmentRow]) -> list[AssessmentRow]:
    """Per (node, judge) the newest of our valid feedbacks: what the trace says now.

    A re-judge under a changed threshold (a new result key) leaves the old feedback valid beside the new one;
    only the newest counts. Newest by the result's own time (``timestamp`` in the metadata), then by when MLflow
    created it. Order kept.

    >>> old = AssessmentRow("relevance", "research", 0.3, 0.8, False, None, None, {"timestamp": "2026-12-01T00:00:00Z"})
    >>> new = AssessmentRow("relevance", "research", 0.9, 0.5, True, None, None, {"timestamp": "2026-12-02T00:00:00Z"})
    >>> [a.value for a in newest_per_target([new, old])]
    [0.9]
    """
    best: dict[tuple[str, str], tuple[tuple[str, int, int], AssessmentRow]] = {}
    for i, a in enumerate(assessments):
        rank = (a.metadata.get("timestamp") or "", a.created_ms, i)
        key = (a.node, a.name)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, a)
    chosen = {id(a) for _, a in best.values()}
    return [a for a in assessments if id(a) in chosen]


def record_after_writeback(
    loaded: Any,
    written: Iterable[Any],
    *,
    superseded: Iterable[str],
    tags: Mapping[str, str],
    environment: str | None = None,
) -> TraceRecord | None:
    """The trace's record once a write-back lands, read by :func:`trace_record` (None: the trace has no verdict).

    ``loaded``: the trace as read before (``LoadedTrace``: assessments, tags, time); ``written``: the feedbacks
    written (MLflow ``Feedback`` entities, as ``writer.feedback`` builds them); ``superseded``: the assessment ids they
    override (MLflow marks those invalid); ``tags``: the trace tags written.
    """
    gone = set(superseded)
    written = list(written)
    assessments = [a for a in loaded.assessments if getattr(a, "assessment_id", None) not in gone]
    info = SimpleNamespace(
        trace_id=loaded.trace_id,
        request_time=loaded.timestamp_ms,
        # MLflow names the trace after its root span (``mlflow.traceName``); a worker may read the trace before
        # that tag lands, and then has the name from the root span itself
        tags={"mlflow.traceName": loaded.workflow_name, **loaded.tags, **tags},
        assessments=[*assessments, *written],
    )
    row = judged_row(info, history=[*loaded.assessments, *written])  # superseded ones count as failed evaluations too
    return None if row is None else trace_record(row, environment=environment)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
