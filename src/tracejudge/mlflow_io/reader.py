"""Read a finished trace from MLflow and turn it into judge targets.

A target is one node span (named ``node_<id>``, or carrying a ``node.id``
attribute) with its inputs, outputs and context (outputs of TOOL and
RETRIEVER spans under it), plus the root span as the ``workflow`` target.
Each target also carries its ordered tool calls and steps (``{tool_calls}``,
``{trajectory}``; :mod:`tracejudge.mlflow_io.trajectory`).
A plain trace without node spans has just the root.

MLflow exports traces asynchronously, so "not found" (or a half-written
trace) right after the workflow returned is :class:`TraceNotReady`, which
the caller retries for a grace period; a malformed id is
:class:`InvalidTraceId`, which is permanent. A tracking server that does not
answer is :class:`MlflowUnavailable` (retried with backoff, never a verdict),
also when MLflow reports it as "missing span data": MLflow reads a trace's
info and then its spans in two requests, and wraps *any* failure of the
second one (the server going down in between) as not-found span data, so
the exception's chain is checked for a connection failure first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tracejudge.judges.model import JudgeInput
from tracejudge.judges.trajectory import ToolUsage, tool_usage
from tracejudge.judges.plan import WORKFLOW_TARGET
from tracejudge.mlflow_io.trajectory import SpanTree, is_tool_span, node_id
from tracejudge.ops import metrics

EXPECTATION_NAMES = ("expected_response", "expected_answer", "expected_output", "expected", "ground_truth")
#: MLflow trace ids are ``tr-<32 hex>``; other stores use other forms, so only obvious garbage is refused.
TRACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:/.\-]{2,255}$")
_NOT_READY_WORDS = re.compile(r"not found|does not exist|corrupted|span data|not yet|RESOURCE_DOES_NOT_EXIST", re.I)


class TraceNotReady(LookupError):
    """The trace is not (fully) in the store yet: retry within the grace period."""


class InvalidTraceId(ValueError):
    """The id cannot be a trace id: a permanent failure."""


class MlflowUnavailable(ConnectionError):
    """The tracking store did not answer: retry with backoff, judge calls are kept."""


@dataclass
class Target:
    """One thing to judge: a node span or the workflow root."""

    node_id: str
    span_id: str
    span_name: str
    judge_input: JudgeInput


@dataclass
class LoadedTrace:
    trace_id: str
    experiment_id: str | None
    run_id: str | None
    workflow_name: str
    targets: list[Target]
    assessments: list[Any] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    state: str = ""
    timestamp_ms: int = 0
    #: how long the traced workflow ran (its end is ``timestamp_ms + duration_ms``)
    duration_ms: int = 0


def trace_tool_usage(loaded: LoadedTrace) -> ToolUsage | None:
    """The trace's tool calls counted (from the workflow target, which sees every call once), or None if it made none."""
    root = next((t for t in loaded.targets if t.node_id == WORKFLOW_TARGET), None)
    calls = root.judge_input.tool_calls if root is not None else []
    return tool_usage(calls, default_node=WORKFLOW_TARGET) if calls else None


def check_trace_id(trace_id: Any) -> str:
    """Refuse ids that cannot be trace ids, with a message saying why."""
    if not isinstance(trace_id, str) or not trace_id.strip():
        raise InvalidTraceId(f"trace id must be a non-empty string, got {trace_id!r}")
    if not TRACE_ID.match(trace_id):
        raise InvalidTraceId(
            f"malformed trace id {trace_id[:80]!r}: expected something like 'tr-<32 hex digits>'"
        )
    return trace_id


def fetch_trace(client: Any, trace_id: str) -> Any:
    """``client.get_trace`` with MLflow's failures sorted into not-ready, unavailable and the rest."""
    check_trace_id(trace_id)
    try:
        trace = _get_trace(client, trace_id)
    except TraceNotReady:
        metrics.count_mlflow_call("get_trace", "not_ready")
        raise
    except MlflowUnavailable:
        metrics.count_mlflow_call("get_trace", "unavailable")
        raise
    except Exception:
        metrics.count_mlflow_call("get_trace", "error")
        raise
    metrics.count_mlflow_call("get_trace", "ok")
    if trace is None:
        raise TraceNotReady(f"trace {trace_id} is not in the tracking store")
    if not trace.data.spans:
        raise TraceNotReady(f"trace {trace_id} has no spans in the store yet")
    status = str(getattr(trace.info, "state", getattr(trace.info, "status", "")))
    if "IN_PROGRESS" in status:
        raise TraceNotReady(f"trace {trace_id} is still in progress")
    return trace


def _get_trace(client: Any, trace_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        trace = client.get_trace(trace_id)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        text = str(exc)
        cause = _unavailable_cause(exc)
        if cause is not None:
            raise MlflowUnavailable(f"MLflow tracking server unavailable: {text[:200]} (caused by {cause})") from None
        if code == "RESOURCE_DOES_NOT_EXIST":  # MLflow's text only says so again ("Trace with ID ... not found")
            raise TraceNotReady(f"trace {trace_id} is not in the tracking store") from None
        if _NOT_READY_WORDS.search(text):
            raise TraceNotReady(f"trace {trace_id} is not readable in the tracking store yet (MLflow: {text[:300]})") from None
        if _looks_unavailable(text):
            raise MlflowUnavailable(f"MLflow tracking server unavailable: {text[:300]}") from None
        raise
    except (ConnectionError, OSError) as exc:
        raise MlflowUnavailable(f"MLflow tracking server unavailable: {exc}") from None
    return trace


def load_trace(client: Any, trace_id: str) -> LoadedTrace:
    """Fetch a trace once and extract its targets."""
    trace = fetch_trace(client, trace_id)
    info = trace.info
    metadata = dict(getattr(info, "trace_metadata", None) or getattr(info, "request_metadata", None) or {})
    tags = dict(getattr(info, "tags", None) or {})
    root = _root_span(trace.data.spans)
    return LoadedTrace(
        trace_id=trace_id,
        experiment_id=_experiment_id(info),
        run_id=metadata.get("mlflow.sourceRun"),
        workflow_name=tags.get("mlflow.traceName") or (root.name if root is not None else "workflow"),
        targets=extract_targets(trace),
        assessments=list(getattr(info, "assessments", None) or []),
        tags=tags,
        state=str(getattr(info, "state", None) or getattr(info, "status", None) or ""),
        timestamp_ms=int(getattr(info, "request_time", 0) or 0),
        duration_ms=int(getattr(info, "execution_duration", 0) or 0),
    )


def extract_targets(trace: Any) -> list[Target]:
    """Node spans in start order, then the workflow root."""
    spans = list(trace.data.spans)
    tree = SpanTree(spans)
    root = _root_span(spans)
    expectations = _expectations(trace)
    root_inputs = _as_dict(root.inputs) if root is not None else {}
    targets: list[Target] = []
    for span in sorted(spans, key=lambda s: (s.start_time_ns or 0)):
        node = node_id(span)
        if node is None:
            continue
        targets.append(_target(node, span, _context(span, tree.children), root_inputs, expectations, tree))
    if root is not None:
        all_context = [s.outputs for s in spans if is_tool_span(s) and s.outputs is not None]
        targets.append(_target(WORKFLOW_TARGET, root, all_context, {}, expectations, tree))
    return targets


def _target(
    node: str, span: Any, context: list[Any], root_inputs: dict[str, Any], expectations: dict[str, Any], tree: SpanTree
) -> Target:
    inputs = _as_dict(span.inputs)
    merged = {**root_inputs, **inputs}
    metadata = _nest({k: v for k, v in (span.attributes or {}).items() if not k.startswith("mlflow.")})
    expected = expectations.get(span.span_id, expectations.get(None))
    if expected is None:
        expected = metadata.get("node", {}).get("expected") if isinstance(metadata.get("node"), dict) else None
    return Target(
        node_id=node,
        span_id=span.span_id,
        span_name=span.name,
        judge_input=JudgeInput(
            target=node,
            span_id=span.span_id,
            output=_unwrap(span.outputs),
            input=span.inputs,
            context=context,
            expected=expected,
            inputs=merged,
            metadata=metadata,
            tool_calls=tree.tool_calls(span.span_id),
            trajectory=tree.trajectory(span.span_id),
        ),
    )


def _context(span: Any, children: dict[str | None, list[Any]]) -> list[Any]:
    found: list[Any] = []
    stack = list(children.get(span.span_id, []))
    while stack:
        child = stack.pop(0)
        if node_id(child) is not None:
            continue  # a nested node owns its own tools
        if is_tool_span(child) and child.outputs is not None:
            found.append(child.outputs)
        stack.extend(children.get(child.span_id, []))
    return found


def _expectations(trace: Any) -> dict[str | None, Any]:
    found: dict[str | None, Any] = {}
    for assessment in getattr(trace.info, "assessments", None) or []:
        expectation = getattr(assessment, "expectation", None)
        if expectation is None or assessment.name not in EXPECTATION_NAMES:
            continue
        found.setdefault(assessment.span_id, expectation.value)
    return found


def _root_span(spans: list[Any]) -> Any:
    for span in spans:
        if span.parent_id is None:
            return span
    return spans[0] if spans else None


def _experiment_id(info: Any) -> str | None:
    experiment_id = getattr(info, "experiment_id", None)
    if experiment_id:
        return str(experiment_id)
    location = getattr(info, "trace_location", None)
    mlflow_experiment = getattr(location, "mlflow_experiment", None)
    return getattr(mlflow_experiment, "experiment_id", None)


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _unwrap(value: Any) -> Any:
    """``{"article": "..."}`` -> ``"..."``: a single-field output is judged as its value."""
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value.values()))
    return value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node.setdefault(parts[-1], value)
    return nested


#: What MLflow's HTTP errors say when the server did not answer (or a proxy said it is down); a bare
#: "503" is not enough, since trace ids and URLs are full of digits.
_UNAVAILABLE_WORDS = re.compile(
    r"Max retries exceeded|Connection refused|Connection aborted|Connection reset|ConnectionError|RemoteDisconnected"
    r"|Failed to establish|timed out|(?:error|status) code (?:502|503|504)\b|\b(?:502|503|504) Server Error"
)


def _looks_unavailable(text: str) -> bool:
    return bool(_UNAVAILABLE_WORDS.search(text))


def _unavailable_cause(exc: BaseException) -> str | None:
    """The connection failure somewhere under ``exc`` (its ``__cause__``/``__context__`` chain), if any.

    MLflow turns a failed span-data download into "missing span data" (raised ``from None``, which keeps
    the original as ``__context__``), so an outage between its two requests looks like a half-written trace.
    """
    seen: set[int] = set()
    link: BaseException | None = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (ConnectionError, TimeoutError)) or _is_requests_connection_error(link):
            return f"{type(link).__name__}: {str(link)[:200]}"
        if _looks_unavailable(str(link)):
            return f"{type(link).__name__}: {str(link)[:200]}"
        link = link.__cause__ or link.__context__
    return None


def _is_requests_connection_error(exc: BaseException) -> bool:
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError, Timeout
    except ImportError:  # pragma: no cover - MLflow depends on requests
        return False
    return isinstance(exc, (RequestsConnectionError, Timeout))
