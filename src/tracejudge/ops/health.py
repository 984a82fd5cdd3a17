"""A worker process's health, as the liveness and readiness probes see it.

Each worker process knows two facts about itself: whether its event loop runs (the watchdog's lag,
``ops/watchdog.py``) and whether its Celery consumer has started. A worker that serves its own
``/healthz`` reads them in process (:class:`ProcessHealth`); the children of a supervised worker
(``tracejudge worker --processes N``) write them to a small JSON file each (``health-<pid>.json`` in
the metrics directory, every watchdog tick) and the supervisor's server reads those
(:func:`read_health_files`), so a child whose process is frozen (its file goes stale) counts as dead too.

>>> h = ProcessHealth(block_seconds=30); h.update(lag=0.01); h.consumer_ready = True
>>> h.live(), h.ready()
((True, 'event loop lag 0.01 s'), (True, 'consumer started'))
>>> h.update(lag=31.0, blocked=True); h.live()[0]
False
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ProcessHealth", "read_health_files", "HEALTH_FILE_PREFIX"]

HEALTH_FILE_PREFIX = "health-"
#: A health file older than this many watchdog intervals (or this many seconds, whichever is more) is stale.
STALE_INTERVALS = 10
STALE_MIN_SECONDS = 5.0


@dataclass
class ProcessHealth:
    """One worker process: its loop's lag, whether it counts as blocked, whether its consumer started."""

    block_seconds: float
    pid: int = field(default_factory=os.getpid)
    lag: float = 0.0
    blocked: bool = False
    consumer_ready: bool = False
    updated: float = field(default_factory=time.time)
    interval: float = 0.5

    def update(self, *, lag: float, blocked: bool = False) -> None:
        self.lag, self.blocked, self.updated = lag, blocked or self.blocked, time.time()

    def live(self, *, now: float | None = None) -> tuple[bool, str]:
        """(alive, why): the loop is not blocked beyond the bound, and the record is fresh."""
        now = time.time() if now is None else now
        stale_after = max(STALE_MIN_SECONDS, STALE_INTERVALS * self.interval)
        if self.blocked or self.lag >= self.block_seconds:
            return False, f"event loop blocked for {self.lag:.1f} s (bound {self.block_seconds:g} s)"
        if now - self.updated > stale_after:
            return False, f"no heartbeat for {now - self.updated:.1f} s (the process is frozen)"
        return True, f"event loop lag {self.lag:.2f} s"

    def ready(self) -> tuple[bool, str]:
        return (True, "consumer started") if self.consumer_ready else (False, "consumer not started yet")

    def write(self, directory: str | Path) -> None:
        """Write this record to ``<directory>/health-<pid>.json`` (atomically: readers never see half a file)."""
        path = Path(directory) / f"{HEALTH_FILE_PREFIX}{self.pid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path) -> ProcessHealth | None:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def read_health_files(directory: str | Path, pids: set[int] | None = None) -> dict[int, ProcessHealth]:
    """The health records in ``directory`` (only ``pids``' when given)."""
    found: dict[int, ProcessHealth] = {}
    for path in Path(directory).glob(f"{HEALTH_FILE_PREFIX}*.json"):
        record = ProcessHealth.read(path)
        if record is not None and (pids is None or record.pid in pids):
            found[record.pid] = record
    return found


def remove_health_file(directory: str | Path, pid: int) -> None:
    try:
        (Path(directory) / f"{HEALTH_FILE_PREFIX}{pid}.json").unlink()
    except OSError:
        pass
