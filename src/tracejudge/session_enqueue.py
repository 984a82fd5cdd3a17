"""Judge a conversation on request: ``tracejudge.enqueue_session(session_id)``.

The producer side of :mod:`tracejudge.sessions`: it sends a small JSON payload (the session id
and options) to the ``tracejudge.evaluate_session`` task and returns a handle whose
``verdict()`` waits for the conversation's :class:`~tracejudge.sessions.SessionVerdict` and
applies the quality gate, like :func:`tracejudge.enqueue`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from tracejudge.config import JudgeRef
from tracejudge.enqueue import ConfigSource, _as_ref, _disabled, judging_off, resolve_config
from tracejudge.publish import CompletedHandle, DisabledHandle, EvaluationHandle, send_request
from tracejudge.payload import SessionRequest
from tracejudge.sessions.verdict import SessionVerdict

__all__ = ["SessionHandle", "enqueue_session"]

log = logging.getLogger(__name__)


class SessionHandle(EvaluationHandle):
    """A queued conversation; ``verdict()`` waits for its :class:`SessionVerdict` and applies the gate.

    ``trace_id`` holds the session id until the verdict names the session's first trace.
    """

    verdict_model = SessionVerdict

    @property
    def session_id(self) -> str:
        return self.trace_id

    def __repr__(self) -> str:
        return f"SessionHandle(id={self.id!r}, session_id={self.trace_id!r})"


def enqueue_session(
    session_id: str,
    *,
    experiment_id: str | None = None,
    config: ConfigSource = None,
    gate: bool = False,
    judges: Sequence[str | JudgeRef | Mapping[str, Any]] | None = None,
    environment: str | None = None,
    force: bool = False,
) -> SessionHandle | CompletedHandle | DisabledHandle:
    """Queue a conversation (the traces sharing MLflow's session id) for its session judges.

    ``experiment_id`` says where its traces are (else the workers look in ``online.experiments``,
    else in every experiment); ``config`` and ``judges`` as for :func:`tracejudge.enqueue`
    (``judges`` replaces ``judges.sessions.judges``); ``gate=True`` uses the gate queue.
    MLflow's pending trace exports are flushed first, so the last turn is in the store.
    Results land on the session's first trace; a conversation that grew since it was last
    judged is judged again and its new results supersede the old.

    >>> handle = tracejudge.enqueue_session("chat-42", gate=True)  # doctest: +SKIP
    >>> handle.verdict(timeout=60).status  # doctest: +SKIP
    'passed'
    """
    explicit = config is not None
    resolved = resolve_config(config)
    off = judging_off(resolved)
    if off is not None:
        return _disabled(session_id, off)
    mode = resolved.judges.execution.mode
    try:
        request = SessionRequest(
            session_id=session_id,
            experiment_id=None if experiment_id is None else str(experiment_id),
            config=resolved if explicit else None,
            judges=[_as_ref(j) for j in judges] if judges is not None else None,
            gate=gate,
            environment=environment,
            force=force,
        )
    except ValidationError as exc:
        from tracejudge.sessions.evaluate import session_error
        from tracejudge.tasks.evaluate import INVALID_PAYLOAD
        from tracejudge.payload import describe_payload_error

        message = describe_payload_error(exc)
        log.error("tracejudge: not judging session %s: %s", session_id, message)
        return CompletedHandle(session_error(str(session_id), INVALID_PAYLOAD, message, resolved), config=resolved)
    from tracejudge.mlflow_io.export import flush_pending_traces

    flush_pending_traces()  # the conversation's last turn may still be in MLflow's export queue
    if mode == "sync":
        from tracejudge.sessions.evaluate import evaluate_session
        from tracejudge.tasks.runtime import get_runtime

        return CompletedHandle(evaluate_session(request, get_runtime(config=resolved, use_redis=False)), config=resolved)
    from tracejudge.worker.names import TASK_EVALUATE_SESSION

    return send_request(request, resolved, task=TASK_EVALUATE_SESSION, handle=SessionHandle)  # type: ignore[return-value]
