"""Which workers are alive and which queues they consume, from Celery's remote control (ping/inspect).

One broadcast answers "who is there" (``ping``, waits ``timeout``); the next ones ask exactly those
workers and return as soon as each has answered (``limit``), so a look costs about ``timeout`` seconds.
``tracejudge status`` shows the result; a handle's ``EvaluationTimeout`` (``publish.no_reader_hint``), and so
``tracejudge gate``, uses :func:`no_consumer_message` to say why a verdict does not come (no worker reads the
gate queue) instead of timing out silently as PENDING.
"""

from __future__ import annotations

from typing import Any

from tracejudge.ops.pipeline import WorkerInfo

__all__ = ["WorkerInfo", "consumers_of", "inspect_workers", "no_consumer_message"]

#: Before saying "no worker answers", ask once more with this longer wait: a live worker on a loaded
#: machine (or a busy threads pool) can miss a one-second ping, and a false warning sends users hunting.
CONFIRM_TIMEOUT_SECONDS = 5.0


def inspect_workers(app: Any, *, timeout: float = 1.0) -> list[WorkerInfo]:
    """The live workers: name, processes, running tasks, queues (an empty list when none answers).

    Raises the broker's connection error when the broker is down (the caller says so).
    """
    pings = app.control.inspect(timeout=timeout).ping() or {}
    if not pings:
        return []
    names = sorted(pings)
    inspect = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
    queues = inspect.active_queues() or {}
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    out = []
    for name in names:
        pool = (stats.get(name) or {}).get("pool") or {}
        children = pool.get("processes")
        out.append(
            WorkerInfo(
                name=name,
                processes=len(children) if isinstance(children, list) and children else 1,
                concurrency=pool.get("max-concurrency"),
                active=len(active.get(name) or []),
                queues=sorted(q.get("name", "") for q in queues.get(name) or []),
            )
        )
    return out


def consumers_of(queue: str, workers: list[WorkerInfo]) -> list[str]:
    """The names of the workers that read ``queue``.

    >>> consumers_of("tracejudge.gate", [WorkerInfo(name="w1@h", processes=1, queues=["tracejudge.online"])])
    []
    """
    return [w.name for w in workers if queue in w.queues]


def no_consumer_message(app: Any, queue: str, *, timeout: float = 1.0,
                        confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS) -> str | None:
    """A sentence saying that no live worker reads ``queue`` (and what the live ones read), or None when
    one does, or when the broker cannot be asked (the caller's own error says that).

    A first look waits ``timeout``; when it finds no reader, a second look waits ``confirm_timeout`` so
    that a slow-to-answer worker is not reported missing.
    """
    workers: list[WorkerInfo] = []
    for wait in (timeout, confirm_timeout):
        try:
            workers = inspect_workers(app, timeout=wait)
        except Exception:  # the broker went away: the wait's own error reports it
            return None
        if consumers_of(queue, workers):
            return None
    from tracejudge.worker.names import QUEUES

    start = f"start one: `tracejudge worker` (or `celery -A tracejudge.worker worker -Q {','.join(QUEUES)}`)"
    if not workers:
        return f"no worker answers on this broker, so nothing reads the queue {queue}; {start}"
    seen = "; ".join(f"{w.name} reads {', '.join(w.queues) or 'nothing'}" for w in workers)
    return f"no worker reads the queue {queue} ({seen}); {start}"
