"""Read a finished trace from MLflow and turn it into judge targets.

A target is one node span (named ``node_<id>``, or carrying a ``node.id``
attribute) with its inputs, outputs and context (outputs of TOOL and
RETRIEVER spans under it), plus the root span as the ``workflow`` target.
Each target also carries its ordered tool calls and steps (``{tool_calls}``,
``{trajectory}``; :mod:`tracejudge.mlflow_io.trajectory`): read at once by
default, or, with ``agent=False``, only when :func:`add_agent_data` is called
(the worker does so when a judge of its plan reads them; they cost ~10 ms of
CPU on an agent trace of 85 spans, ``bench/agent_extract.py``).
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

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracejudge.judges.model import JudgeInput
from tracejudge.judges.trajectory import ToolCall, ToolUsage, tool_usage
from tracejudge.judges.plan import WORKFLOW_TARGET
from tracejudge.mlflow_io.trajectory import SpanTree, is_tool_span, node_id
from tracejudge.ops import metrics

EXPECTATION_NAMES = ("expected_response", "expected_answer", "expected_output", "expected", "ground_truth")
#: MLflow trace ids are ``tr-<32 hex>``; other stores use other forms, so only obvious garbage is refused.
TRACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:/.\-]{2,255}$")
_NOT_FULLY_EXPORTED = re.compile(r"not fully exported", re.I)
_NOT_READY_WORDS = re.compile(r"not found|does not exist|corrupted|span data|not yet|RESOURCE_DOES_NOT_EXIST", re.I)


class TraceNotReady(LookupError):
    """The trace is not (fully) in the store yet: retry within the grace period."""


class TraceIncomplete(TraceNotReady):
    """The trace is in the store but not whole (fewer spans than counted, a span without its parent)."""


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
    #: False when MLflow recorded no span count to check the spans read against (see :func:`not_whole`)
    span_count_known: bool = True
    #: the spans indexed, kept for :func:`add_agent_data` and :func:`trace_tool_usage` (None: not kept)
    tree: SpanTree | None = field(default=None, repr=False, compare=False)
    #: whether the targets carry their tool calls and steps (``load_trace(..., agent=True)`` or :func:`add_agent_data`)
    agent_data: bool = True


def add_agent_data(loaded: LoadedTrace) -> LoadedTrace:
    """Give every target its ``tool_calls`` and ``trajectory`` (a trace read with ``agent=False``); idempotent."""
    if loaded.agent_data or loaded.tree is None:
        return loaded
    for target in loaded.targets:
        target.judge_input.tool_calls = loaded.tree.tool_calls(target.span_id)
        target.judge_input.trajectory = loaded.tree.trajectory(target.span_id)
    loaded.agent_data = True
    return loaded


def trace_tool_calls(loaded: LoadedTrace) -> list[ToolCall]:
    """Every tool call of the trace, in order (those under the workflow root, which sees each call once): the
    workflow target's ``{tool_calls}`` when read, else from the spans (no steps built)."""
    root = next((t for t in loaded.targets if t.node_id == WORKFLOW_TARGET), None)
    if root is None:
        return []
    if loaded.agent_data or loaded.tree is None:
        return list(root.judge_input.tool_calls)
    return loaded.tree.tool_calls(root.span_id)


def trace_tool_usage(loaded: LoadedTrace, *, calls: list[ToolCall] | None = None) -> ToolUsage | None:
    """The trace's tool calls counted (:func:`trace_tool_calls`, unless given), or None if it made none."""
    calls = trace_tool_calls(loaded) if calls is None else calls
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


#: Trace metadata MLflow's exporter writes with the trace record, after the spans: ``{"num_spans": N, ...}``.
SIZE_STATS = "mlflow.trace.sizeStats"
#: Present once the trace record itself is written (the exporter's last step); span export alone creates
#: the trace's row without any metadata.
TRACE_RECORD_KEY = "mlflow.trace_schema.version"
#: The note a verdict carries when the trace was judged without a span count to check it against.
UNCOUNTED = "span count unknown"


def not_whole(trace: Any, *, last_look: bool = False) -> str | None:
    """Why the trace is not whole yet, or None when it is (issue 17: judge only whole traces).

    MLflow exports spans one by one and then the trace record, whose metadata ``mlflow.trace.sizeStats``
    holds ``num_spans``; a trace read in between (its root span already made it look finished) misses
    spans. With the count: fewer spans than counted is not whole. Without it, what can be proven: a span
    whose parent is missing is not whole, and a trace whose record is not written yet (no
    ``mlflow.trace_schema.version``) is not whole until ``last_look`` (the end of ``trace_wait_seconds``:
    a trace sent by an exporter that never writes the record, OTLP, is then judged as read).

    >>> from types import SimpleNamespace as NS
    >>> span = lambda i, parent=None: NS(span_id=i, parent_id=parent, name=f"s{i}")
    >>> whole = NS(info=NS(trace_metadata={SIZE_STATS: '{"num_spans": 2}'}), data=NS(spans=[span("a"), span("b", "a")]))
    >>> half = NS(info=NS(trace_metadata={SIZE_STATS: '{"num_spans": 3}'}), data=NS(spans=[span("a"), span("b", "a")]))
    >>> not_whole(whole), not_whole(half)
    (None, '2 of its 3 spans are in the store')
    """
    spans = list(trace.data.spans or [])
    metadata = _metadata(trace.info)
    expected = span_count(metadata)
    if expected is not None:
        return None if len(spans) >= expected else f"{len(spans)} of its {expected} spans are in the store"
    ids = {span.span_id for span in spans}
    orphans = sorted({span.name for span in spans if span.parent_id and span.parent_id not in ids})
    if orphans:
        return f"the parent span of {', '.join(orphans[:3])} is not in the store yet"
    if TRACE_RECORD_KEY not in metadata and not last_look:
        return "its spans are being exported; the trace record (with the span count) is not written yet"
    return None


def span_count(metadata: Mapping[str, Any]) -> int | None:
    """``num_spans`` from ``mlflow.trace.sizeStats``, None when absent or unreadable."""
    raw = metadata.get(SIZE_STATS)
    if not raw:
        return None
    try:
        value = json.loads(raw).get("num_spans")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def _metadata(info: Any) -> dict[str, Any]:
    return dict(getattr(info, "trace_metadata", None) or getattr(info, "request_metadata", None) or {})


def fetch_trace(client: Any, trace_id: str, *, last_look: bool = False) -> Any:
    """``client.get_trace`` with MLflow's failures sorted into not-ready, unavailable and the rest.

    A trace that is not whole yet (:func:`not_whole`) is :class:`TraceNotReady` too.
    """
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
    missing = not_whole(trace, last_look=last_look)
    if missing is not None:
        raise TraceIncomplete(f"trace {trace_id} is not whole yet: {missing}")
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
        if _NOT_FULLY_EXPORTED.search(text):  # MLflow's SQL store counted more spans than it holds
            raise TraceIncomplete(
                f"trace {trace_id} is not whole yet: the store holds fewer spans than MLflow counted (not fully exported)"
            ) from None
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


def load_trace(client: Any, trace_id: str, *, last_look: bool = False, agent: bool = True) -> LoadedTrace:
    """Fetch a whole trace once and extract its targets (``last_look``: see :func:`not_whole`).

    ``agent=False`` leaves the targets' tool calls and steps out until :func:`add_agent_data`.
    """
    trace = fetch_trace(client, trace_id, last_look=last_look)
    info = trace.info
    metadata = _metadata(info)
    tags = dict(getattr(info, "tags", None) or {})
    root = _root_span(trace.data.spans)
    tree = SpanTree(trace.data.spans)
    return LoadedTrace(
        trace_id=trace_id,
        experiment_id=_experiment_id(info),
        run_id=metadata.get("mlflow.sourceRun"),
        workflow_name=tags.get("mlflow.traceName") or (root.name if root is not None else "workflow"),
        targets=extract_targets(trace, agent=agent, tree=tree),
        assessments=list(getattr(info, "assessments", None) or []),
        tags=tags,
        state=str(getattr(info, "state", None) or getattr(info, "status", None) or ""),
        timestamp_ms=int(getattr(info, "request_time", 0) or 0),
        duration_ms=int(getattr(info, "execution_duration", 0) or 0),
        span_count_known=span_count(metadata) is not None,
        tree=tree,
        agent_data=agent,
    )


def extract_targets(trace: Any, *, agent: bool = True, tree: SpanTree | None = None) -> list[Target]:
    """Node spans in start order, then the workflow root.

    ``agent``: with each target's tool calls and steps (else empty, see :func:`add_agent_data`);
    ``tree``: the spans already indexed.
    """
    spans = list(trace.data.spans)
    tree = tree or SpanTree(spans)
    root = _root_span(spans)
    expectations = _expectations(trace)
    root_inputs = _as_dict(root.inputs) if root is not None else {}
    targets: list[Target] = []
    for span in sorted(spans, key=lambda s: (s.start_time_ns or 0)):
        node = node_id(span)
        if node is None:
            continue
        targets.append(_target(node, span, _context(span, tree.children), root_inputs, expectations, tree if agent else None))
    if root is not None:
        all_context = [s.outputs for s in spans if is_tool_span(s) and s.outputs is not None]
        targets.append(_target(WORKFLOW_TARGET, root, all_context, {}, expectations, tree if agent else None))
    return targets


def _target(
    node: str, span: Any, context: list[Any], root_inputs: dict[str, Any], expectations: dict[str, Any],
    tree: SpanTree | None,
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
            tool_calls=tree.tool_calls(span.span_id) if tree is not None else [],
            trajectory=tree.trajectory(span.span_id) if tree is not None else [],
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
