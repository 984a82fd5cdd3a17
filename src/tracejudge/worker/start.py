"""Starting workers: ``tracejudge worker`` as one process, or as N supervised ones (``--processes``).

>>> take_processes(["--processes", "3", "-c", "8"])
(3, ['-c', '8'])
>>> take_processes(["--processes=1"]), take_processes(["-P", "prefork"])
((1, []), (1, ['-P', 'prefork']))
>>> take_processes(["--pool", "threads"])[0] == default_processes()
True
"""

from __future__ import annotations

from typing import Any

from tracejudge.worker.names import QUEUES
from tracejudge.worker.supervisor import Supervisor, default_processes

DEFAULT_POOL = "threads"
DEFAULT_CONCURRENCY = 16


def take_processes(args: list[str]) -> tuple[int, list[str]]:
    """``--processes N`` out of the options, and the rest for Celery. Without it: one per core on the threads
    pool (the default), one when another pool is chosen (``--pool prefork -c 4`` stays one Celery worker)."""
    rest: list[str] = []
    chosen: str | None = None
    items = iter(args)
    for arg in items:
        if arg == "--processes":
            chosen = next(items, None)
            if chosen is None:
                raise ValueError("--processes needs a number (1 for a single worker process)")
        elif arg.startswith("--processes="):
            chosen = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if chosen is None:
        return (default_processes() if pool_of(rest) == DEFAULT_POOL else 1), rest
    try:
        processes = int(chosen)
    except ValueError:
        raise ValueError(f"--processes must be a whole number (got {chosen!r})") from None
    if processes < 1:
        raise ValueError(f"--processes must be 1 or more (got {processes})")
    return processes, rest


def pool_of(args: list[str]) -> str:
    """The pool Celery's options choose (``-P x``, ``-Px``, ``--pool x``, ``--pool=x``), else the default.

    >>> pool_of(["-c", "2"]), pool_of(["-P", "solo"]), pool_of(["--pool=prefork"]), pool_of(["-Pgevent"])
    ('threads', 'solo', 'prefork', 'gevent')
    """
    items = iter(args)
    for arg in items:
        if arg in ("-P", "--pool"):
            return next(items, DEFAULT_POOL)
        if arg.startswith("--pool="):
            return arg.split("=", 1)[1]
        if arg.startswith("-P") and len(arg) > 2:
            return arg[2:]
    return DEFAULT_POOL


def celery_argv(extra: list[str]) -> list[str]:
    """``worker`` with tracejudge's defaults (threads pool, 16 threads, both queues, INFO); options given win."""
    argv = ["worker"]
    if not has_option(extra, "-P", "--pool"):
        argv += ["--pool", DEFAULT_POOL]
    if not has_option(extra, "-c", "--concurrency"):
        argv += ["--concurrency", str(DEFAULT_CONCURRENCY)]
    if not has_option(extra, "-Q", "--queues"):
        argv += ["--queues", ",".join(QUEUES)]
    if not has_option(extra, "-l", "--loglevel"):
        argv += ["--loglevel", "INFO"]
    return argv + extra


def run_worker_process(app: Any, extra: list[str]) -> int:
    """One Celery worker in this process (``--processes 1``; also each supervised child)."""
    from tracejudge.tasks import set_worker_environment

    set_worker_environment()
    app.worker_main(celery_argv(extra))
    return 0


def run_supervisor(processes: int, extra: list[str]) -> int:
    """``processes`` worker processes under one supervisor (see ``worker/supervisor.py``)."""
    return Supervisor(processes, extra).run()


def has_option(args: list[str], short: str, long: str) -> bool:
    return any(a == short or a == long or a.startswith(long + "=") or (a.startswith(short) and len(a) > 2) for a in args)
