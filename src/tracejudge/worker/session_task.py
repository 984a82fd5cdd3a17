"""The Celery task that judges a conversation: a thin shell around :func:`tracejudge.sessions.run_session_task`."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from tracejudge.worker.names import TASK_EVALUATE_SESSION


def register_session_task(app: Celery) -> None:
    """Register ``tracejudge.evaluate_session`` on ``app`` (once)."""
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
