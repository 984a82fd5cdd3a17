"""The Celery side: the app, the evaluation task and worker start-up.

``celery -A tracejudge.worker worker`` finds the app here (``app``), built
on first access from the environment (``TRACEJUDGE_REDIS_URL`` ...).
"""

from __future__ import annotations

import threading
from typing import Any

from tracejudge.tasks import set_worker_environment
from tracejudge.worker.celery_app import make_app
from tracejudge.worker.names import QUEUE_GATE, QUEUE_ONLINE, QUEUES, TASK_EVALUATE

_app: Any = None
_lock = threading.Lock()


def get_app() -> Any:
    """The process's Celery app (built once)."""
    global _app
    with _lock:
        if _app is None:
            _app = make_app()
        return _app


def reset_app() -> None:
    """Forget the app, so the next :func:`get_app` reads the environment again (tests)."""
    global _app
    with _lock:
        _app = None


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(name)


__all__ = ["QUEUES", "QUEUE_GATE", "QUEUE_ONLINE", "TASK_EVALUATE", "get_app", "make_app", "reset_app", "set_worker_environment"]
