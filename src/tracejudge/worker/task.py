"""The Celery task: a thin shell around :func:`tracejudge.tasks.run_task`.

What to do with a payload, and whether a failure is worth a retry, is
decided in :mod:`tracejudge.tasks`; here the answer is only mapped onto
Celery: a verdict is the task's result, a ``Retry`` becomes ``self.retry``
with its countdown.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore

from tracejudge.ops import metrics
from tracejudge.tasks import run_task
from tracejudge.worker.names import TASK_EVALUATE


def register(app: Celery) -> None:
    """Register the evaluation task on ``app`` (once)."""
    if TASK_EVALUATE in app.tasks:
        return

    # max_retries=None: the retry policy (tasks.retry) decides when to stop, and then answers with a verdict
    @app.task(name=TASK_EVALUATE, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True)
    def evaluate_trace(self: Task, payload: Any) -> dict[str, Any]:
        return run_evaluation(self, payload)

    from tracejudge.worker.scheduled import register_scheduled
    from tracejudge.worker.session_task import register_session_task

    register_scheduled(app)
    register_session_task(app)


def run_evaluation(task: Task, payload: Any) -> dict[str, Any]:
    """Run the task body and map its outcome onto Celery: a result, a retry, or nothing (deferred)."""
    queue = (task.request.delivery_info or {}).get("routing_key") or "none"
    metrics.QUEUE.set(queue)
    started = time.monotonic()
    try:
        outcome = run_task(payload, attempt=task.request.retries, task_id=task.request.id)
    except Exception:
        metrics.count_evaluation(queue=queue, status="exception")  # a bug: the task fails with its traceback
        raise
    if outcome.retry is not None:
        metrics.count_evaluation(queue=queue, status="retried")
        raise task.retry(countdown=outcome.retry.countdown)
    if outcome.deferred:  # put aside in Redis, sent again later (controls.deferred): no result now
        metrics.count_evaluation(queue=queue, status="deferred")
        raise Ignore()
    assert outcome.verdict is not None
    status = "partial" if outcome.verdict.get("partial") else str(outcome.verdict.get("status"))
    metrics.count_evaluation(queue=queue, status=status, seconds=time.monotonic() - started)
    return outcome.verdict
