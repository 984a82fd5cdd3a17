"""The Celery task that evaluates one trace, and worker start-up.

The task body is :func:`tracejudge.tasks.evaluate.evaluate_request`; this
module adds what only a queue worker needs: payload validation into an
error verdict (a bad payload is answered, not retried), retries with
backoff while MLflow is unreachable, and warm start-up (MLflow imported
once per worker, telemetry and the model-catalog fetch off).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery, Task, signals
from pydantic import ValidationError

log = logging.getLogger(__name__)

#: While MLflow is down: retry after 1, 2, 4, 8, 15, 15, ... s, for about ten minutes.
MLFLOW_RETRY_MAX = 45
MLFLOW_RETRY_CAP_SECONDS = 15

#: Environment defaults for worker processes, unless the user set them.
WORKER_ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_MODEL_CATALOG_URI": "",
    # MLflow's HTTP client retries 7 times with long backoff by default, and a retried POST whose first
    # reply was lost writes a second assessment; our task retries instead (it re-reads the trace first).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def set_worker_environment() -> None:
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def register(app: Celery) -> None:
    """Register the evaluation task on ``app``."""
    from tracejudge.worker.celery_app import TASK_EVALUATE

    if TASK_EVALUATE in app.tasks:
        return

    @app.task(name=TASK_EVALUATE, bind=True, max_retries=MLFLOW_RETRY_MAX, acks_late=True, reject_on_worker_lost=True)
    def evaluate_trace(self: Task, payload: Any) -> dict[str, Any]:
        return run_evaluation(self, payload)

    from tracejudge.worker.scheduled import register_scheduled

    register_scheduled(app)


def run_evaluation(task: Task, payload: Any) -> dict[str, Any]:
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.tasks.evaluate import (
        INVALID_PAYLOAD,
        MLFLOW_UNAVAILABLE,
        EvaluationBusy,
        EvaluationDeferred,
        evaluate_request,
        verdict_json,
    )
    from tracejudge.tasks.payload import EvaluationRequest, describe_payload_error, payload_trace_id
    from tracejudge.tasks.runtime import get_runtime
    from tracejudge.verdict import error_verdict

    runtime = get_runtime()
    try:
        request = EvaluationRequest.model_validate(payload)
    except ValidationError as exc:
        message = describe_payload_error(exc)
        log.error("refused task %s: %s", task.request.id, message)
        return verdict_json(error_verdict(payload_trace_id(payload), INVALID_PAYLOAD, message, runtime.config))
    try:
        return verdict_json(evaluate_request(request, runtime))
    except EvaluationDeferred as exc:  # budget spent, on_exceed: defer: sent again when the day turns
        from celery.exceptions import Ignore

        from tracejudge.tasks.deferred import defer
        from tracejudge.tasks.runtime import key_prefix

        when = defer(runtime.redis, key_prefix(), exc.request)
        log.warning("%s (until %s UTC)", exc, time.strftime("%Y-%m-%d %H:%M", time.gmtime(when)))
        raise Ignore() from None
    except (MlflowUnavailable, EvaluationBusy) as exc:  # worth a retry: nothing judged is lost (Redis cache)
        retries = task.request.retries
        if retries >= MLFLOW_RETRY_MAX:
            log.error("giving up on %s after %d retries: %s", request.trace_id, retries, exc)
            config = request.config or runtime.config
            return verdict_json(
                error_verdict(request.trace_id, MLFLOW_UNAVAILABLE, str(exc), config, evaluation_id=request.evaluation_id)
            )
        countdown = min(2**retries, MLFLOW_RETRY_CAP_SECONDS)
        reason = "MLflow unavailable" if isinstance(exc, MlflowUnavailable) else "evaluation lock busy"
        log.warning("%s for %s (retry %d in %d s): %s", reason, request.trace_id, retries + 1, countdown, exc)
        raise task.retry(exc=exc, countdown=countdown)


@signals.worker_init.connect
def _warm_worker(sender: Any = None, **_: Any) -> None:
    """Once per worker: environment defaults, patient result storing, then import MLflow (~2 s)."""
    from tracejudge.worker.celery_app import WORKER_BACKEND_ALWAYS_RETRY, WORKER_BACKEND_RETRY

    set_worker_environment()
    app = getattr(sender, "app", None)
    if app is not None:
        options = dict(app.conf.result_backend_transport_options or {})
        options["retry_policy"] = WORKER_BACKEND_RETRY
        app.conf.result_backend_transport_options = options
        # (the producer keeps failing fast; a worker must not lose a verdict to a Redis restart)
        app.conf.update(WORKER_BACKEND_ALWAYS_RETRY)
    import mlflow  # noqa: F401

    from tracejudge.tasks.runtime import import_judge_modules

    import_judge_modules()


@signals.worker_process_init.connect
def _warm_child(**_: Any) -> None:
    """Each prefork child builds its runtime (event loop, LLM client) before its first task."""
    from tracejudge.tasks.runtime import get_runtime

    get_runtime()


@signals.worker_ready.connect
def _warm_runtime(**_: Any) -> None:
    """Threads/solo pools share the main process: build its runtime once, now."""
    from tracejudge.tasks.runtime import get_runtime

    get_runtime()
