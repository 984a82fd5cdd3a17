"""The scheduled (Celery beat) tasks: online pick-up and the release of deferred evaluations.

``celery -A tracejudge.worker beat`` (or ``tracejudge beat``) sends them on
the schedule in :func:`beat_schedule`; any worker runs them. The work itself
is in ``tracejudge.controls.online`` and ``tracejudge.controls.deferred``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from tracejudge.config import TraceJudgeConfig

log = logging.getLogger(__name__)

TASK_ONLINE_SCAN = "tracejudge.online_scan"
TASK_RELEASE_DEFERRED = "tracejudge.release_deferred"
RELEASE_DEFERRED_SECONDS = 60.0


def beat_schedule(config: TraceJudgeConfig) -> dict[str, dict[str, Any]]:
    """Our beat entries (others, e.g. monitoring alerts, sit beside them in ``beat_schedule``).

    >>> sorted(beat_schedule(TraceJudgeConfig.model_validate({"judges": {"online": {"experiments": ["1"]}}})))
    ['tracejudge-online-scan', 'tracejudge-release-deferred']
    """
    from tracejudge.worker.names import QUEUE_ONLINE

    schedule: dict[str, dict[str, Any]] = {
        "tracejudge-release-deferred": {
            "task": TASK_RELEASE_DEFERRED,
            "schedule": RELEASE_DEFERRED_SECONDS,
            "options": {"queue": QUEUE_ONLINE, "expires": RELEASE_DEFERRED_SECONDS},
        }
    }
    online = config.judges.online
    if online.experiments:
        schedule["tracejudge-online-scan"] = {
            "task": TASK_ONLINE_SCAN,
            "schedule": online.interval_seconds,
            # a scan not started within its interval is dropped: the next one covers the same window
            "options": {"queue": QUEUE_ONLINE, "expires": online.interval_seconds},
        }
    return schedule


def register_scheduled(app: Celery) -> None:
    if TASK_ONLINE_SCAN in app.tasks:
        return

    @app.task(name=TASK_ONLINE_SCAN, acks_late=True)
    def online_scan() -> dict[str, Any]:
        return run_online_scan(app)

    @app.task(name=TASK_RELEASE_DEFERRED, acks_late=True)
    def release_deferred() -> int:
        from tracejudge.controls.deferred import release
        from tracejudge.tasks.runtime import get_runtime

        return release(get_runtime(), lambda request: send_request(app, request))


def send_request(app: Celery, request: Any, *, task: str | None = None) -> Any:
    """Put an evaluation request on its queue (the same message ``enqueue`` sends); ``task`` names another
    task for another request (a ``SessionRequest`` goes to ``tracejudge.evaluate_session``)."""
    from tracejudge.worker.names import QUEUE_GATE, QUEUE_ONLINE, TASK_EVALUATE

    return app.send_task(
        task or TASK_EVALUATE,
        args=[request.model_dump(mode="json", exclude_none=True)],
        task_id=request.evaluation_id,
        queue=QUEUE_GATE if request.gate else QUEUE_ONLINE,
        argsrepr=getattr(request, "trace_id", None) or request.session_id,
        kwargsrepr="{}",
    )


def run_online_scan(app: Celery) -> dict[str, Any]:
    """One scan (``tracejudge.controls.online.run_scan``) whose traces go on this app's queue."""
    from tracejudge.controls.online import run_scan
    from tracejudge.tasks.runtime import get_runtime

    return run_scan(get_runtime(), lambda request: send_request(app, request))
