"""Read people's feedback next to our judges' scores, for ``tracejudge agreement``.

Where a person left feedback on a span with a judge's name (an MLflow
assessment whose source is HUMAN, e.g. from MLflow's review UI or
``mlflow.log_feedback(source=AssessmentSource(source_type="HUMAN", ...))``),
and our judge scored the same span, the two make a pair. Only valid
assessments count (an overridden one is skipped); the latest human feedback
on a (span, name) wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from tracejudge.mlflow_io.query import trace_infos
from tracejudge.mlflow_io.writer import KEY

PAGE_SIZE = 500


@dataclass
class HumanPair:
    """Our judge's score and a person's feedback on the same span and judge name."""

    trace_id: str
    span_id: str | None
    judge: str
    judge_version: str
    score: float
    threshold: float | None
    greater_is_better: bool
    human_value: Any
    human_source: str


def judge_human_pairs(client: Any, experiment_id: str, start_ms: int, end_ms: int) -> Iterator[HumanPair]:
    """Every (judge score, human feedback) pair on traces started in ``[start_ms, end_ms)``, page by page."""
    filter_string = f"timestamp_ms >= {int(start_ms)} AND timestamp_ms < {int(end_ms)}"
    for info in trace_infos(client, experiment_id, filter_string, page_size=PAGE_SIZE):
        yield from _pairs(info)


def _pairs(info: Any) -> Iterator[HumanPair]:
    judged: dict[tuple[str | None, str], Any] = {}
    human: dict[tuple[str | None, str], Any] = {}
    for a in getattr(info, "assessments", None) or []:
        if getattr(a, "valid", True) is False or getattr(a, "feedback", None) is None:
            continue
        where = (getattr(a, "span_id", None), a.name)
        source_type = str(getattr(getattr(a, "source", None), "source_type", "") or "").upper()
        metadata = dict(getattr(a, "metadata", None) or {})
        if source_type == "HUMAN":
            if where not in human or _time(a) >= _time(human[where]):
                human[where] = a
        elif KEY in metadata and getattr(a, "error", None) is None and isinstance(getattr(a, "value", None), (int, float)):
            judged[where] = a
    for where, person in human.items():
        ours = judged.get(where)
        if ours is None:
            continue
        metadata = dict(ours.metadata or {})
        yield HumanPair(
            trace_id=info.trace_id,
            span_id=where[0],
            judge=where[1],
            judge_version=metadata.get("judge_version") or "unknown",
            score=float(ours.value),
            threshold=_float(metadata.get("threshold")),
            greater_is_better=metadata.get("greater_is_better", "true") == "true",
            human_value=person.value,
            human_source=str(getattr(person.source, "source_id", "") or ""),
        )


def _time(assessment: Any) -> int:
    return int(getattr(assessment, "last_update_time_ms", None) or getattr(assessment, "create_time_ms", None) or 0)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
