"""Sample conversations for the demo, the tests and the docs: one MLflow trace per turn, one session id.

``record_turn`` records one turn of a chat assistant under MLflow tracing, with the session id in
the trace metadata (``mlflow.trace.session``, through ``mlflow.update_current_trace(session_id=...)``)
and, optionally, TOOL spans for the tools it called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


#: A short conversation (user message, answer) the demo records: the last turn asks what the first one said.
SAMPLE_CONVERSATION: tuple[tuple[str, str], ...] = (
    ("My name is Ada and I am vegetarian. Plan me a dinner.", "Hi Ada! A vegetarian dinner: lentil soup, then mushroom risotto."),
    ("Add a dessert, please.", "For dessert: poached pears with vanilla."),
    ("What was my name again?", "Your name is Ada."),
)


def record_turn(
    session_id: str,
    message: str,
    answer: str,
    *,
    tool_calls: Sequence[tuple[str, dict[str, Any], Any]] = (),
    workflow: str = "chat",
) -> str:
    """Record one turn ``chat(message) -> answer`` of session ``session_id``; returns its trace id.

    ``tool_calls``: ``(name, arguments, result)`` per tool the turn called, in order; ``workflow``: the trace's
    name (its root span's).
    """
    import mlflow
    from mlflow.entities import SpanType

    @mlflow.trace(name=workflow, span_type=SpanType.CHAT_MODEL)
    def chat(message: str) -> str:
        mlflow.update_current_trace(session_id=session_id)
        for name, arguments, result in tool_calls:
            with mlflow.start_span(name=name, span_type=SpanType.TOOL) as span:
                span.set_inputs(arguments)
                span.set_outputs(result)
        return answer

    _after_last_turn()
    chat(message)
    _turn_ended()
    trace_id = mlflow.get_last_active_trace_id(thread_local=True) or mlflow.get_last_active_trace_id()
    assert trace_id, "MLflow recorded no trace"
    return trace_id


_last_turn_ms = 0


def _after_last_turn() -> None:
    """Start each turn in a later millisecond than the one before ended: a session's turns are ordered by their
    traces' start times (milliseconds), and two turns recorded within one millisecond would tie, in the store's
    order (real turns are seconds apart; this only spins across a clock tick)."""
    import time

    while time.time_ns() // 1_000_000 <= _last_turn_ms:
        pass


def _turn_ended() -> None:
    import time

    global _last_turn_ms
    _last_turn_ms = time.time_ns() // 1_000_000


def record_conversation(session_id: str, turns: Sequence[tuple[str, str]], *, workflow: str = "chat") -> list[str]:
    """Record several turns of one session, oldest first; returns their trace ids (exports flushed)."""
    import mlflow

    ids = [record_turn(session_id, message, answer, workflow=workflow) for message, answer in turns]
    mlflow.flush_trace_async_logging()
    return ids
