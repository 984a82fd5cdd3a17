"""The session task's body: a payload in, a verdict or a retry decision out (like ``tasks.run_task``)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from tracejudge.sessions.evaluate import evaluate_session, session_error
from tracejudge.payload import SessionRequest
from tracejudge.tasks import entry
from tracejudge.tasks.entry import TaskOutcome, retry_or_give_up, with_evaluation_id
from tracejudge.tasks.evaluate import INVALID_PAYLOAD
from tracejudge.payload import describe_payload_error
from tracejudge.tasks.retry import RetryPolicy
from tracejudge.tasks.runtime import get_runtime

log = logging.getLogger(__name__)


def run_session_task(
    payload: Any, *, attempt: int = 0, task_id: str | None = None, policy: RetryPolicy | None = None
) -> TaskOutcome:
    """Judge one session payload; ``attempt`` is the number of retries so far (0 on first delivery).

    ``policy``: the retry policy (default ``tasks.entry.DEFAULT_POLICY``, looked up at each call). A payload without an
    ``evaluation_id`` is the evaluation ``task_id``, as for traces: every delivery of the message is one evaluation.

    >>> run_session_task({"session_id": 5}).verdict["error"]["code"]  # doctest: +SKIP
    'INVALID_PAYLOAD'
    """
    policy = policy or entry.DEFAULT_POLICY
    runtime = get_runtime()
    payload = with_evaluation_id(payload, task_id)
    try:
        request = SessionRequest.model_validate(payload)
    except ValidationError as exc:
        message = describe_payload_error(exc)
        log.error("refused session task %s: %s", task_id, message)
        sid = payload.get("session_id") if isinstance(payload, dict) and isinstance(payload.get("session_id"), str) else "<unknown>"
        return TaskOutcome(verdict=session_error(sid, INVALID_PAYLOAD, message, runtime.config).to_result())
    try:
        return TaskOutcome(verdict=evaluate_session(request, runtime).to_result())
    except Exception as exc:

        def give_up(code: str, message: str) -> dict[str, Any]:
            config = request.config or runtime.config
            return session_error(request.session_id, code, message, config, evaluation_id=request.evaluation_id).to_result()

        outcome = retry_or_give_up(exc, policy=policy, attempt=attempt, what=f"session {request.session_id}", give_up=give_up)
        if outcome is None:
            raise  # a bug: the task fails with its traceback
        return outcome
