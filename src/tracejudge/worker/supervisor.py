"""``tracejudge worker --processes N``: N Celery worker processes, kept running, stopped together.

Why our own supervisor and not Celery's prefork pool: a worker process's evaluations share one event
loop, one LLM client and one MLflow client (``tasks/runtime.py``), and spend most of their time
waiting, so one process runs 16 at once on a threads pool. A prefork child runs one task at a time,
so it would need 16 children per core, each with its own loop, clients and MLflow import (~180 MB).
And the lease on held messages (``worker/lease.py``) and the atomic fetch (``worker/fetch.py``) live
with the consumer: in prefork the parent holds every message while the children run them, so a
child whose loop is blocked could not stop its messages' lease. N whole workers (consumer, lease,
loop, threads) keep every one of those mechanisms as it is, one per process.

The supervisor itself runs no tasks and imports no MLflow:

* it starts N children (``python -m tracejudge.worker.child`` with the Celery options, each named
  ``<name>-<i>@<host>``), and starts a child again when it dies (at once, then with a growing pause
  if it keeps dying within :data:`FAST_DEATH_SECONDS`; its messages come back to the queue when its
  lease lapses);
* SIGTERM/SIGINT are passed on as SIGTERM: each child makes Celery's warm shutdown (running
  evaluations finish, the rest stay queued) and the supervisor exits when all have;
* with ``TRACEJUDGE_METRICS_PORT`` it serves ``/metrics`` for all of them (prometheus_client's
  multiprocess mode in ``PROMETHEUS_MULTIPROC_DIR``, a temporary directory unless set; a dead child's
  live gauges are dropped with ``mark_process_dead``), ``/healthz`` (503 while a child's loop is
  blocked or its heartbeat is stale) and ``/readyz`` (every child's consumer started, Redis and the
  tracking store answer).
* a child whose supervisor is gone (SIGKILL) notices within a second and shuts down warm.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tracejudge.config import Settings
from tracejudge.ops.health import read_health_files, remove_health_file
from tracejudge.ops.server import MetricsServer, metrics_source

log = logging.getLogger(__name__)

#: A child that dies sooner than this after its start is started again after a pause (1, 2, 4 ... 30 s).
FAST_DEATH_SECONDS = 10.0
MAX_RESTART_PAUSE = 30.0


def default_processes() -> int:
    """One worker process per core this process may run on (``sched_getaffinity``: a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def child_hostname(hostname: str | None, index: int) -> str:
    """Celery node name of child ``index``: the given ``--hostname`` with ``-<index>`` before the ``@``.

    >>> child_hostname(None, 1), child_hostname("gate@%h", 2), child_hostname("w7", 3)
    ('worker-1@%h', 'gate-2@%h', 'w7-3')
    """
    if not hostname:
        return f"worker-{index}@%h"
    name, at, host = hostname.partition("@")
    return f"{name}-{index}{at}{host}"


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    fast_deaths: int = 0


class Supervisor:
    """Runs ``processes`` worker children with ``celery_args`` (``--hostname`` taken out and made per child)."""

    def __init__(self, processes: int, celery_args: list[str], *, settings: Settings | None = None) -> None:
        self.processes = processes
        self.settings = settings or Settings.from_env()
        self.hostname, self.celery_args = _pop_hostname(celery_args)
        self.children: dict[int, Child] = {}
        self.stopping = threading.Event()
        self.restarts = 0
        self.metrics_dir: str | None = None
        self._own_dir = False
        self.server: MetricsServer | None = None

    # ------------------------------------------------------------------ life cycle

    def run(self) -> int:
        """Start the children and keep them running until SIGTERM/SIGINT; the exit status (0: all stopped cleanly)."""
        self._prepare_metrics_dir()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(1, self.processes + 1):
                self._start(index)
            self._serve()
            log.info("tracejudge worker: %d processes (pids %s)", self.processes, ", ".join(str(c.proc.pid) for c in self.children.values()))
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.server is not None:
                self.server.close()
            if self._own_dir and self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _prepare_metrics_dir(self) -> None:
        if self.settings.metrics_port is None:
            return
        if self.settings.metrics_dir:
            self.metrics_dir = self.settings.metrics_dir
            os.makedirs(self.metrics_dir, exist_ok=True)
        else:
            self.metrics_dir = tempfile.mkdtemp(prefix="tracejudge-metrics-")
            self._own_dir = True

    def _start(self, index: int) -> Child:
        env = dict(os.environ)
        if self.metrics_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        cmd = [sys.executable, "-m", "tracejudge.worker.child", *self.celery_args, "--hostname", child_hostname(self.hostname, index)]
        proc = subprocess.Popen(cmd, env=env)
        previous = self.children.get(index)
        child = Child(index=index, proc=proc, fast_deaths=previous.fast_deaths if previous else 0)
        self.children[index] = child
        return child

    def _serve(self) -> None:
        if self.settings.metrics_port is None:
            return
        from tracejudge.worker.serving import readings, ready_checks

        self.server = MetricsServer(
            host=self.settings.metrics_host,
            port=self.settings.metrics_port,
            source=metrics_source(self.metrics_dir, *readings(self.settings)),
            live=[self.children_live],
            ready=[self.children_ready, *ready_checks(self.settings)],
        ).start()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping.is_set():
            log.info("tracejudge worker: %s, stopping %d processes (running evaluations finish)", signal.Signals(signum).name, len(self.children))
        self.stopping.set()
        for child in list(self.children.values()):
            if child.proc.poll() is None:
                try:
                    child.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _watch(self) -> int:
        status = 0
        while self.children:
            try:
                pid, code = os.wait()
            except ChildProcessError:
                break
            child = next((c for c in self.children.values() if c.proc.pid == pid), None)
            if child is None:
                continue
            child.proc.returncode = os.waitstatus_to_exitcode(code)
            self._forget(pid)
            if self.stopping.is_set():
                del self.children[child.index]
                if child.proc.returncode not in (0, -signal.SIGTERM):
                    status = 1
                continue
            self._restart(child)
        return status

    def _forget(self, pid: int) -> None:
        if self.metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)
            remove_health_file(self.metrics_dir, pid)

    def _restart(self, child: Child) -> None:
        lived = time.monotonic() - child.started
        child.fast_deaths = child.fast_deaths + 1 if lived < FAST_DEATH_SECONDS else 0
        pause = min(MAX_RESTART_PAUSE, 2 ** (child.fast_deaths - 1)) if child.fast_deaths else 0.0
        log.error(
            "tracejudge worker: process %d (pid %d) exited with status %s after %.0f s; starting it again%s",
            child.index, child.proc.pid, child.proc.returncode, lived, f" in {pause:g} s" if pause else "",
        )
        if pause and self.stopping.wait(pause):
            del self.children[child.index]
            return
        self.restarts += 1
        self._start(child.index)

    # ------------------------------------------------------------------ probes

    def _records(self) -> dict[int, Any]:
        pids = {c.proc.pid for c in self.children.values() if c.proc.poll() is None}
        return read_health_files(self.metrics_dir, pids) if self.metrics_dir else {}

    def children_live(self) -> tuple[bool, str]:
        """Every running child that reported is live (a child still starting has not reported: not a failure)."""
        problems, lags = [], []
        for pid, record in sorted(self._records().items()):
            ok, why = record.live()
            lags.append(record.lag)
            if not ok:
                problems.append(f"pid {pid}: {why}")
        if problems:
            return False, "; ".join(problems)
        return True, f"{len(lags)} of {self.processes} processes report, worst loop lag {max(lags, default=0.0):.2f} s"

    def children_ready(self) -> tuple[bool, str]:
        records = self._records()
        ready = sum(1 for r in records.values() if r.consumer_ready)
        return ready == self.processes, f"{ready} of {self.processes} processes consuming"


def _pop_hostname(args: list[str]) -> tuple[str | None, list[str]]:
    """Take ``-n/--hostname`` out of Celery's options (each child gets its own).

    >>> _pop_hostname(["-c", "4", "--hostname", "w1@%h", "-Q", "q"])
    ('w1@%h', ['-c', '4', '-Q', 'q'])
    >>> _pop_hostname(["--hostname=w2@x"])
    ('w2@x', [])
    """
    rest: list[str] = []
    hostname = None
    items = iter(args)
    for arg in items:
        if arg in ("-n", "--hostname"):
            hostname = next(items, None)
        elif arg.startswith("--hostname="):
            hostname = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2:
            hostname = arg[2:]
        else:
            rest.append(arg)
    return hostname, rest
