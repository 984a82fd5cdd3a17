"""Production failures as a regression set: judged traces into an MLflow evaluation dataset.

:func:`collect` pages through an experiment's judged traces (their verdict tag ``tracejudge.status``, our
feedbacks) and keeps those that failed, errored, or where a judge scored below a bound; :func:`extend_dataset`
creates the dataset or adds to it: each trace's root inputs, its output, people's expectations (MLflow
expectations, and HUMAN feedback under a judge's name as ``<judge>`` expectations), and the tag
``tracejudge.source_trace``. Traces already in the dataset (by that tag) are not added again.

>>> DatasetQuery(experiment_id="1", status=["failed"]).filter_string()
"tags.`tracejudge.status` = 'failed'"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from tracejudge.mlflow_io.query import trace_infos
from tracejudge.mlflow_io.search import time_filter
from tracejudge.mlflow_io.writer import KEY

__all__ = ["DatasetQuery", "DatasetResult", "SOURCE_TAG", "collect", "extend_dataset", "record_of"]

#: The record tag naming the trace a record came from (re-runs skip traces already there).
SOURCE_TAG = "tracejudge.source_trace"
STATUSES = ("passed", "failed", "error", "skipped")


class DatasetQuery(BaseModel):
    """Which judged traces make the set."""

    experiment_id: str
    #: verdict statuses to keep (default: failed and error)
    status: list[str] = Field(default_factory=lambda: ["failed", "error"])
    #: keep a trace when this judge scored below ``below`` (on any target), whatever its status
    judge: str | None = None
    below: float | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def filter_string(self) -> str | None:
        """The store-side part of the query (MLflow's tag filters take one value; several are kept by :meth:`keeps`)."""
        if self.judge is None and len(self.status) == 1:
            by_status = f"tags.`tracejudge.status` = '{self.status[0]}'"
        else:
            by_status = "tags.`tracejudge.status` IS NOT NULL"
        return time_filter(since_ms=self.since_ms, until_ms=self.until_ms, extra=by_status)

    def keeps(self, info: Any) -> bool:
        if self.judge is None:
            return (info.tags or {}).get("tracejudge.status") in self.status
        return any(
            a.name == self.judge and _ours(a) and isinstance(_value(a), (int, float)) and _value(a) < (self.below if self.below is not None else 1.0)
            for a in info.assessments or []
        )


@dataclass
class DatasetResult:
    name: str
    dataset_id: str
    looked_at: int = 0
    added: list[str] = field(default_factory=list)
    already: int = 0
    created: bool = False


def collect(client: Any, query: DatasetQuery) -> list[Any]:
    """The trace infos (with assessments) that the query keeps, oldest first."""
    return [info for info in trace_infos(client, query.experiment_id, query.filter_string() or "") if query.keeps(info)]


def record_of(trace: Any) -> dict[str, Any]:
    """One dataset record from a judged trace: root inputs and output, people's expectations, the source tag."""
    root = trace.data._get_root_span() if trace.data.spans else None
    inputs = root.inputs if root is not None and root.inputs is not None else {}
    if not isinstance(inputs, dict):
        inputs = {"input": inputs}
    expectations: dict[str, Any] = {}
    for assessment in trace.info.assessments or []:
        if not getattr(assessment, "valid", True):
            continue
        if getattr(assessment, "expectation", None) is not None:
            expectations[assessment.name] = assessment.expectation.value
        elif _source_type(assessment) == "HUMAN" and getattr(assessment, "feedback", None) is not None:
            expectations.setdefault(assessment.name, assessment.feedback.value)  # a person's score for a judge
    return {
        "inputs": inputs,
        "outputs": root.outputs if root is not None else None,
        "expectations": expectations,
        "tags": {SOURCE_TAG: trace.info.trace_id, "tracejudge.status": (trace.info.tags or {}).get("tracejudge.status", "")},
        "source": {"source_type": "TRACE", "source_data": {"trace_id": trace.info.trace_id}},
    }


def extend_dataset(
    client: Any,
    name: str,
    query: DatasetQuery,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetResult:
    """Create the dataset ``name`` (in the query's experiment) or add to it the traces the query keeps."""
    from mlflow.genai import datasets

    try:
        dataset = datasets.get_dataset(name=name)
        created = False
    except Exception:  # MLflow raises its own "not found" kinds here, by store
        dataset = datasets.create_dataset(name=name, experiment_id=query.experiment_id, tags={"tracejudge.query": query.model_dump_json()})
        created = True
    present = _source_traces(dataset)
    infos = collect(client, query)
    result = DatasetResult(name=name, dataset_id=dataset.dataset_id, looked_at=len(infos), created=created)
    records = []
    for done, info in enumerate(infos, 1):
        if info.trace_id in present:
            result.already += 1
        else:
            records.append(record_of(client.get_trace(info.trace_id)))
            result.added.append(info.trace_id)
        if progress is not None:
            progress(done, len(infos))
    if records:
        dataset.merge_records(records)
    return result


def _source_traces(dataset: Any) -> set[str]:
    frame = dataset.to_df()
    if frame.empty or "tags" not in frame:
        return set()
    return {tags.get(SOURCE_TAG) for tags in frame["tags"] if isinstance(tags, dict) and tags.get(SOURCE_TAG)}


def _ours(assessment: Any) -> bool:
    return KEY in (assessment.metadata or {}) and _source_type(assessment) in ("LLM_JUDGE", "CODE")


def _source_type(assessment: Any) -> str:
    source = getattr(assessment, "source", None)
    return str(getattr(source, "source_type", "") or "").upper()


def _value(assessment: Any) -> Any:
    feedback = getattr(assessment, "feedback", None)
    return getattr(feedback, "value", None) if feedback is not None else None
