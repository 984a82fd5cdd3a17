"""The Celery tasks of conversations: judging one (``tracejudge.evaluate_session``, a thin shell around
:func:`tracejudge.sessions.run_session_task`) and the beat's scan for idle ones (``tracejudge.session_scan``,
body in :mod:`tracejudge.controls.session_pickup`)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from tracejudge.config import TraceJudgeConfig
from tracejudge.worker.names import QUEUE_ONLINE, TASK_EVALUATE_SESSION

TASK_SESSION_SCAN = "tracejudge.session_scan"


def beat_entries(config: TraceJudgeConfig) -> dict[str, dict[str, Any]]:
    """The session scan's beat entry: with session judges and ``online.experiments``, every ``online.interval_seconds``.

    >>> beat_entries(TraceJudgeConfig.model_validate({"judges": {"online": {"experiments": ["1"]}}}))
    {}
    >>> sorted(beat_entries(TraceJudgeConfig.model_validate(
    ...     {"judges": {"online": {"experiments": ["1"]}, "sessions": {"judges": ["user_frustration"]}}})))
    ['tracejudge-session-scan']
    """
    online = config.judges.online
    if not (online.experiments and config.judges.sessions.enabled):
        return {}
    return {
        "tracejudge-session-scan": {
            "task": TASK_SESSION_SCAN,
            "schedule": online.interval_seconds,
            # a scan not started within its interval is dropped: the next one covers the same window
            "options": {"queue": QUEUE_ONLINE, "expires": online.interval_seconds},
        }
    }


def register_session_task(app: Celery) -> None:
    """Register ``tracejudge.evaluate_session`` and ``tracejudge.session_scan`` on ``app`` (once)."""
    if TASK_EVALUATE_SESSION in app.tasks:
        return

    @app.task(name=TASK_EVALUATE_SESSION, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True)
    def evaluate_session(self: Task, payload: Any) -> dict[str, Any]:
        from tracejudge.sessions import run_session_task

        outcome = run_session_task(payload, attempt=self.request.retries, task_id=self.request.id)
        if outcome.retry is not None:
            raise self.retry(countdown=outcome.retry.countdown)
        assert outcome.verdict is not None
        return outcome.verdict

    @app.task(name=TASK_SESSION_SCAN, acks_late=True)
    def session_scan() -> dict[str, Any]:
        from tracejudge.controls.session_pickup import run_session_scan
        from tracejudge.tasks.runtime import get_runtime
        from tracejudge.worker.scheduled import send_request

        return run_session_scan(get_runtime(), lambda request: send_request(app, request, task=TASK_EVALUATE_SESSION))

