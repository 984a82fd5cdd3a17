"""The session task's payload: a session id and options, never the conversation itself."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field

from tracejudge.config import Environment, JudgeRef
from tracejudge.config.task_config import TaskConfig

PAYLOAD_VERSION = 1


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
