"""Read judged traces back for monitoring: paged ``search_traces`` (trace infos: tags and assessments, no spans).

:func:`judged_traces` pages through an experiment's traces in a time window (trace metadata and assessments
only, no spans) and yields each one tracejudge judged (it carries the ``tracejudge.status`` tag) as a plain
record: the verdict's tags and our assessments with their metadata (node, threshold, passed, error code,
``cost_usd`` where present), and its tool calls per tool (in our feedbacks' metadata, ``tool_record``).
MLflow's ``query_trace_metrics`` is not used for judge figures: it cannot tell our feedback from people's under
the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from tracejudge.mlflow_io.writer import KEY, call_mlflow, failed_evaluations
from tracejudge.mlflow_io.tool_record import ToolCounts, read_counts

#: MLflow's session key; our session results carry it in their metadata (see ``mlflow_io.sessions``).
SESSION = "mlflow.trace.session"

PAGE_SIZE = 500
STATUS_TAG = "tracejudge.status"
#: The environment a judged trace's record names (older traces; ``monitor.record`` reads it, else ``production``).
ENVIRONMENT_TAG = "tracejudge.environment"


class ExperimentNotFound(LookupError):
    """The experiment id (or name) is not in the tracking store."""


@dataclass
class AssessmentRow:
    name: str
    node: str
    value: float | None
    threshold: float | None
    passed: bool
    error_code: str | None
    rationale: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0


@dataclass
class JudgedTraceRow:
    trace_id: str
    timestamp_ms: int
    workflow: str
    tags: dict[str, str]
    assessments: list[AssessmentRow]
    #: evaluations that wrote a non-final feedback of ours on the trace, valid or superseded (automatic retries' count)
    failed_evaluations: int = 0
    #: the trace's tool calls per tool (``tool_record``: in its feedbacks' metadata), None when it has none
    tools: dict[str, ToolCounts] | None = None


def resolve_experiment(client: Any, experiment: str) -> str:
    """The id of an experiment given by id or name; :class:`ExperimentNotFound` names what was asked for."""
    from mlflow.exceptions import MlflowException

    found = None
    if str(experiment).isdigit():
        try:
            found = call_mlflow(client.get_experiment, str(experiment))
        except MlflowException:
            found = None
    if found is None:
        found = call_mlflow(client.get_experiment_by_name, str(experiment))
    if found is None:
        raise ExperimentNotFound(f"experiment {experiment!r} does not exist in the tracking store {store_uri(client)}")
    return str(found.experiment_id)


def store_uri(client: Any) -> str:
    """The client's tracking URI, password hidden, for error messages (MLFLOW_TRACKING_URI says where to look)."""
    from tracejudge.config.settings import redact_url

    uri = getattr(getattr(client, "_tracking_client", None), "tracking_uri", None) or getattr(client, "tracking_uri", None)
    if not uri:
        import mlflow

        uri = mlflow.get_tracking_uri()
    return f"{redact_url(str(uri))} (MLFLOW_TRACKING_URI says which store)"


def judged_traces(
    client: Any,
    experiment_id: str,
    start_ms: int,
    end_ms: int,
    *,
    workflow: str | None = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[JudgedTraceRow]:
    """Every trace tracejudge judged in ``[start_ms, end_ms)`` (by trace start), page by page."""
    filters = [f"timestamp_ms >= {int(start_ms)}", f"timestamp_ms < {int(end_ms)}"]
    if workflow:
        filters.append(workflow_filter(workflow))
    for info in trace_infos(client, experiment_id, " AND ".join(filters), page_size=page_size):
        row = judged_row(info)
        if row is not None:
            yield row


def workflow_filter(workflow: str) -> str:
    """The ``search_traces`` filter on a workflow: the trace's name (its root span's, ``mlflow.traceName``).

    >>> workflow_filter("article_writer")
    "tags.`mlflow.traceName` = 'article_writer'"
    """
    return f"tags.`mlflow.traceName` = '{_quote(workflow)}'"


def trace_infos(client: Any, experiment_id: str, filter_string: str, *, page_size: int = PAGE_SIZE) -> Iterator[Any]:
    """The infos (assessments and tags, no spans) of every trace matching ``filter_string``, oldest first, page by page."""
    token = None
    while True:
        page = call_mlflow(
            client.search_traces,
            locations=[experiment_id],
            filter_string=filter_string,
            max_results=page_size,
            order_by=["timestamp_ms ASC"],
            page_token=token,
            include_spans=False,
        )
        for trace in page:
            yield trace.info
        token = getattr(page, "token", None)
        if not token:
            return


#: The assessment sources of tracejudge's own results (``writer.source_of``); people's feedback is HUMAN.
OUR_SOURCES = frozenset({"LLM_JUDGE", "CODE"})


def is_ours(assessment: Any) -> bool:
    """A valid feedback tracejudge wrote: our key in its metadata and an LLM_JUDGE or CODE source.

    A person's feedback under a judge's name (what ``tracejudge agreement`` asks for, or an override in MLflow's UI,
    which may copy our metadata) is HUMAN: it never counts in the judges' figures.

    >>> from types import SimpleNamespace as A
    >>> judge = A(metadata={KEY: "k"}, valid=True, feedback=object(), source=A(source_type="LLM_JUDGE"))
    >>> human = A(metadata={KEY: "k"}, valid=True, feedback=object(), source=A(source_type="HUMAN"))
    >>> is_ours(judge), is_ours(human)
    (True, False)
    """
    metadata = getattr(assessment, "metadata", None) or {}
    if KEY not in metadata or getattr(assessment, "valid", True) is False or getattr(assessment, "feedback", None) is None:
        return False
    return str(getattr(getattr(assessment, "source", None), "source_type", "") or "").upper() in OUR_SOURCES


def judged_row(info: Any, *, history: Any = None) -> JudgedTraceRow | None:
    """A judged trace as the monitor reads it: its tags and our valid feedbacks (None when tracejudge gave it no verdict).

    ``info`` is what ``search_traces`` returns per trace (or anything with ``trace_id``, ``request_time``, ``tags``
    and ``assessments``): the workers build the same shape for what they just wrote, so both count it alike.
    ``history``: every assessment the trace holds, superseded ones included, when ``info`` leaves those out (its
    failed evaluations are counted over them; default: ``info.assessments``, which ``search_traces`` gives whole).
    """
    tags = dict(getattr(info, "tags", None) or {})
    if STATUS_TAG not in tags:
        return None
    assessments = []
    for a in getattr(info, "assessments", None) or []:
        if not is_ours(a):
            continue
        metadata = dict(getattr(a, "metadata", None) or {})
        if SESSION in metadata:  # a conversation's result (on its first trace): counted in the session figures
            continue
        error = getattr(a, "error", None)
        value = getattr(a, "value", None)
        assessments.append(
            AssessmentRow(
                name=a.name,
                node=metadata.get("node_id", "workflow"),
                value=float(value) if isinstance(value, (int, float)) and error is None else None,
                threshold=_float(metadata.get("threshold")),
                passed=metadata.get("passed") == "true" and error is None,
                error_code=getattr(error, "error_code", None) if error is not None else None,
                rationale=getattr(a, "rationale", None),
                metadata=metadata,
                created_ms=int(getattr(a, "create_time_ms", 0) or 0),
            )
        )
    return JudgedTraceRow(
        trace_id=info.trace_id,
        timestamp_ms=int(getattr(info, "request_time", 0) or getattr(info, "timestamp_ms", 0) or 0),
        workflow=tags.get("mlflow.traceName", "workflow"),
        tags=tags,
        assessments=assessments,
        failed_evaluations=failed_evaluations(getattr(info, "assessments", None) or [] if history is None else history),
        tools=read_counts(a for a in getattr(info, "assessments", None) or [] if is_ours(a)),
    )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
