"""Read a conversation (an MLflow session) from the store, and our record of what was judged of it.

Traces that share the trace metadata ``mlflow.trace.session`` are one conversation; each is a
turn, oldest first (MLflow orders a session by the traces' request time). Following MLflow's
own session scorers (``mlflow/genai/evaluation/session_utils.py``), session-level assessments go
on the session's chronologically first trace, trace-level (no span), with
``mlflow.trace.session`` in their metadata, so MLflow's UI shows them with the session.

Ours also carry how much of the conversation they judged (:data:`TURNS`, :data:`LAST_TRACE`):
that metadata is the record pick-up and backfill read to tell a session that grew since it
was judged; Redis holds no copy of it.

>>> session_filter("chat-42")
"metadata.`mlflow.trace.session` = 'chat-42'"
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracejudge.judges.session_judges import Turn
from tracejudge.mlflow_io import writer
from tracejudge.mlflow_io.reader import TraceNotReady, _experiment_id
from tracejudge.mlflow_io.trajectory import SpanTree

#: MLflow's trace metadata key of the session id (``TraceMetadataKey.TRACE_SESSION``), also put in our feedbacks' metadata.
SESSION = "mlflow.trace.session"
#: Our feedback metadata: the number of turns judged, and the last of them (a trace id).
TURNS = "tracejudge.session.turns"
LAST_TRACE = "tracejudge.session.last_trace"
#: Session ids we can put in a filter: no quotes or backslashes, at most 250 characters (MLflow's limit).
SESSION_ID = re.compile(r"^[^'\"\\\x00-\x1f]{1,250}$")
PAGE_SIZE = 100
POLL_INITIAL_SECONDS = 0.05
POLL_MAX_SECONDS = 2.0


class InvalidSessionId(ValueError):
    """The id cannot be put in an MLflow filter (a quote, a backslash, a control character, empty, too long)."""


class SessionNotFound(LookupError):
    """No trace of the experiment(s) carries this session id."""


def check_session_id(session_id: Any) -> str:
    """Refuse ids that cannot be a session id in a filter, saying why.

    >>> check_session_id("chat-1")
    'chat-1'
    """
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise InvalidSessionId(
            f"session id must be 1 to 250 characters without quotes, backslashes or control characters (got {str(session_id)[:80]!r})"
        )
    return session_id


def session_filter(session_id: str) -> str:
    return f"metadata.`{SESSION}` = '{check_session_id(session_id)}'"


#: Traces that belong to any session (with a time window, for pick-up and backfill).
ANY_SESSION = f"metadata.`{SESSION}` IS NOT NULL"


def session_of(info: Any) -> str | None:
    """The session id of a trace info (``None`` for a trace outside any conversation)."""
    metadata = getattr(info, "trace_metadata", None) or getattr(info, "request_metadata", None) or {}
    return metadata.get(SESSION) or None


def start_ms(info: Any) -> int:
    return int(getattr(info, "request_time", None) or getattr(info, "timestamp_ms", 0) or 0)


def end_ms(info: Any) -> int:
    """When a finished trace ended (start + duration; the start while its duration is unknown)."""
    return start_ms(info) + int(getattr(info, "execution_duration", None) or 0)


def finished(info: Any) -> bool:
    state = str(getattr(info, "state", "") or getattr(info, "status", "") or "").rsplit(".", 1)[-1].upper()
    return state in ("OK", "ERROR")


@dataclass
class LoadedSession:
    """One conversation as read from the store: its turns in order, and the first trace's assessments."""

    session_id: str
    experiment_id: str | None
    turns: list[Turn]
    first_trace_id: str
    last_trace_id: str
    first_assessments: list[Any] = field(default_factory=list)
    last_end_ms: int = 0

    @property
    def judged_through(self) -> str:
        """What a result of this session covers: ``<turns>:<last trace id>``."""
        return f"{len(self.turns)}:{self.last_trace_id}"


def load_session(client: Any, session_id: str, experiment_ids: Sequence[str]) -> LoadedSession:
    """Every trace of the session (spans included), oldest first, as turns (with each turn's tool calls).

    :class:`TraceNotReady` while a
    turn is still running or half exported; :class:`SessionNotFound` when no trace has the id.
    """
    traces = []
    token = None
    while True:
        page = writer.call_mlflow(
            client.search_traces,
            locations=list(experiment_ids),
            filter_string=session_filter(session_id),
            order_by=["timestamp_ms ASC"],
            max_results=PAGE_SIZE,
            page_token=token,
            include_spans=True,
        )
        traces.extend(page)
        token = getattr(page, "token", None)
        if not token:
            break
    if not traces:
        raise SessionNotFound(
            f"no trace of experiment(s) {', '.join(experiment_ids) or 'none'} has session id {session_id!r} "
            f"(trace metadata {SESSION})"
        )
    for trace in traces:
        if not finished(trace.info):
            raise TraceNotReady(f"turn {trace.info.trace_id} of session {session_id} is still running")
        if not trace.data.spans:
            raise TraceNotReady(f"turn {trace.info.trace_id} of session {session_id} has no spans in the store yet")
    traces.sort(key=lambda t: start_ms(t.info))  # stable: the store's order breaks ties
    turns = [
        Turn(
            trace_id=t.info.trace_id,
            user=user_text(_root(t).inputs),
            assistant=answer_text(_root(t).outputs),
            tool_calls=SpanTree(t.data.spans).tool_calls(),
            timestamp_ms=start_ms(t.info),
        )
        for t in traces
    ]
    first = traces[0]
    return LoadedSession(
        session_id=session_id,
        experiment_id=_experiment_id(first.info),
        turns=turns,
        first_trace_id=first.info.trace_id,
        last_trace_id=traces[-1].info.trace_id,
        first_assessments=list(getattr(first.info, "assessments", None) or []),
        last_end_ms=max(end_ms(t.info) for t in traces),
    )


def wait_for_session(client: Any, session_id: str, experiment_ids: Sequence[str], *, wait_seconds: float) -> LoadedSession:
    """:func:`load_session`, polling with backoff while a turn is not exported (or not found) yet."""
    give_up = time.monotonic() + wait_seconds
    pause = POLL_INITIAL_SECONDS
    while True:
        try:
            return load_session(client, session_id, experiment_ids)
        except (TraceNotReady, SessionNotFound):
            if time.monotonic() + pause > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX_SECONDS)


def session_assessments(assessments: Iterable[Any], session_id: str) -> list[Any]:
    """Our valid feedbacks on a trace that judged this session (the record of what was judged)."""
    found = []
    for assessment in assessments:
        metadata = getattr(assessment, "metadata", None) or {}
        if metadata.get(SESSION) == session_id and writer.is_ours(assessment):  # valid, ours, not a person's
            found.append(assessment)
    return found


def judged_through(assessments: Iterable[Any], session_id: str) -> dict[str, str]:
    """Per judge name, what of the session our valid result covers (``<turns>:<last trace id>``).

    >>> from types import SimpleNamespace as A
    >>> a = A(name="user_frustration", feedback=object(), valid=True, metadata={
    ...     SESSION: "s", writer.KEY: "k", TURNS: "3", LAST_TRACE: "tr-3"})
    >>> judged_through([a], "s")
    {'user_frustration': '3:tr-3'}
    """
    return {
        a.name: f"{(a.metadata or {}).get(TURNS, '')}:{(a.metadata or {}).get(LAST_TRACE, '')}"
        for a in session_assessments(assessments, session_id)
    }


def user_text(inputs: Any) -> Any:
    """The user's part of a turn's input: the last user message of a chat, a lone field's value, else all of it.

    >>> user_text({"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]})
    'Hi'
    >>> user_text({"message": "Hello"}), user_text({"q": 1, "k": 2})
    ('Hello', {'q': 1, 'k': 2})
    """
    if isinstance(inputs, dict):
        messages = inputs.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    return message.get("content")
        if len(inputs) == 1:
            return next(iter(inputs.values()))
    return inputs


def answer_text(outputs: Any) -> Any:
    """The assistant's part of a turn's output: a chat completion's message, a lone field's value, else all of it.

    >>> answer_text({"choices": [{"message": {"role": "assistant", "content": "Hello"}}]}), answer_text({"answer": "Yes"})
    ('Hello', 'Yes')
    """
    if isinstance(outputs, dict):
        choices = outputs.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and "content" in message:
                return message["content"]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
    return outputs


def _root(trace: Any) -> Any:
    spans = trace.data.spans
    return next((s for s in spans if s.parent_id is None), spans[0])



def all_experiments(client: Any, *, limit: int = 1000) -> list[str]:
    """The ids of the store's active experiments (where a session is looked for when no experiment is named)."""
    found = writer.call_mlflow(client.search_experiments, max_results=limit)
    return [e.experiment_id for e in found]


@dataclass
class SessionResultRow:
    """One valid session result of ours, as the monitor reads it from the session's first trace."""

    session_id: str
    judge: str
    value: float | None
    passed: bool
    error_code: str | None
    turns: int
    timestamp_ms: int
    #: the environment the record names (the result's ``environment`` metadata, else the first trace's
    #: ``tracejudge.environment`` tag); None when it names none
    environment: str | None = None


def session_results(
    client: Any, experiment_id: str, since_ms: int, until_ms: int, *, workflow: str | None = None
) -> list[SessionResultRow]:
    """Our valid session results on traces that started in ``[since_ms, until_ms)`` (a session counts where it began).

    ``workflow``: only sessions whose first turn is a trace of that workflow (its name, ``mlflow.traceName``): the
    results sit on that trace, so this is the one trace a session's workflow can be read from.
    """
    from tracejudge.mlflow_io.query import ENVIRONMENT_TAG, trace_infos, workflow_filter

    window = f"{ANY_SESSION} AND timestamp_ms >= {int(since_ms)} AND timestamp_ms < {int(until_ms)}"
    if workflow:
        window += f" AND {workflow_filter(workflow)}"
    rows = []
    for info in trace_infos(client, experiment_id, window):
        sid = session_of(info)
        tagged = (getattr(info, "tags", None) or {}).get(ENVIRONMENT_TAG) or None
        for a in session_assessments(getattr(info, "assessments", None) or [], sid or ""):
            metadata = a.metadata or {}
            error = getattr(a, "error", None)
            value = getattr(a, "value", None)
            rows.append(
                SessionResultRow(
                    session_id=sid or "",
                    judge=a.name,
                    value=float(value) if isinstance(value, (int, float)) and error is None else None,
                    passed=metadata.get("passed") == "true" and error is None,
                    error_code=getattr(error, "error_code", None) if error is not None else None,
                    turns=int(metadata.get(TURNS) or 0),
                    timestamp_ms=start_ms(info),
                    environment=metadata.get("environment") or tagged,
                )
            )
    return rows
