"""The task payload: a small JSON object of ids and options, never a trace body.

Validated on both ends: the producer builds it, the worker refuses anything
else (wrong types, unknown fields, no trace id) with a clear error verdict
instead of retrying.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tracejudge.config import Environment, JudgeRef
from tracejudge.config.task_config import TaskConfig

PAYLOAD_VERSION = 1


class EvaluationRequest(BaseModel):
    """What ``enqueue`` sends and the worker evaluates.

    >>> EvaluationRequest(trace_id="tr-abc").gate
    False
    """

    model_config = ConfigDict(extra="forbid")

    version: int = PAYLOAD_VERSION
    trace_id: str = Field(min_length=1, max_length=512)
    evaluation_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    config: TaskConfig | None = None  # None: the worker's own config; never quality_alerts (its sinks are secrets)
    judges: list[JudgeRef] | None = None  # replaces the plan's judges for this call
    gate: bool = False
    environment: Environment | None = None  # a closed set: anything else is INVALID_PAYLOAD
    retry_of: str | None = Field(default=None, min_length=1, max_length=512)  # the trace this one re-runs
    force: bool = False  # re-judge even what is already on the trace (the new results supersede the old)
    enqueued_at: float = Field(default_factory=time.time)



class SessionRequest(BaseModel):
    """What ``enqueue_session``, pick-up and backfill send, and the worker judges.

    >>> SessionRequest(session_id="chat-42").gate
    False
    """

    model_config = ConfigDict(extra="forbid")

    version: int = PAYLOAD_VERSION
    kind: str = Field(default="session", pattern="^session$")
    session_id: str = Field(min_length=1, max_length=250)
    #: The experiment holding the session's traces; None: ``online.experiments``, else every experiment.
    experiment_id: str | None = Field(default=None, min_length=1, max_length=128)
    evaluation_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    config: TaskConfig | None = None  # None: the worker's own config; never quality_alerts (its sinks are secrets)
    judges: list[JudgeRef] | None = None  # replaces judges.sessions.judges for this call
    gate: bool = False
    environment: Environment | None = None
    force: bool = False  # judge again even what the record says is judged (the new results supersede)
    enqueued_at: float = Field(default_factory=time.time)


def describe_payload_error(exc: ValidationError) -> str:
    """One line per problem, naming the field: ``trace_id: Field required``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "payload"
        value = error.get("input")
        got = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 80 else ""
        parts.append(f"{where}: {error.get('msg')}{got}")
    return "invalid task payload: " + "; ".join(parts)


def payload_trace_id(payload: Any) -> str:
    """The trace id of a payload that may be malformed (for error verdicts)."""
    if isinstance(payload, dict) and isinstance(payload.get("trace_id"), str):
        return payload["trace_id"]
    return "<unknown>"
