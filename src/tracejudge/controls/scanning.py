"""What the beat's two scans share (traces: :mod:`.online`; conversations: :mod:`.session_pickup`).

Each walks the experiments of ``online.experiments`` in order and scans one only while it
holds that experiment's scan lock in Redis, so two scanners never scan one experiment at once
(the second skips it this round). The lock is coordination only: one that expires mid-scan
costs a duplicate claim attempt, never a wrong record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tracejudge.config import TraceJudgeConfig

__all__ = ["online_experiment_ids", "scan_each_experiment", "scan_lock"]


def scan_each_experiment(
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    *,
    lock_prefix: str,
    lock_seconds: float,
    scan_one: Callable[[str], None],
    skipped: list[str],
    on_each: Callable[[str], object] | None = None,
) -> None:
    """``scan_one(experiment_id)`` for each of ``online.experiments`` in order, under its lock ``<lock_prefix><id>``;
    an experiment whose lock another scanner holds is appended to ``skipped``. ``on_each(experiment_id)`` runs
    first for every experiment, skipped or not. What ``scan_one`` raises ends the scan (the lock is released)."""
    for experiment_id in online_experiment_ids(store, config):
        if on_each is not None:
            on_each(experiment_id)
        with scan_lock(state, f"{lock_prefix}{experiment_id}", seconds=lock_seconds) as held:
            if held:
                scan_one(experiment_id)
            else:
                skipped.append(experiment_id)


def online_experiment_ids(store: Any, config: TraceJudgeConfig) -> Iterator[str]:
    """The ids of ``online.experiments``, in order, each resolved when it is reached (an unknown one raises
    ``UnknownExperiment`` naming its place in the config, after the ones before it were scanned)."""
    where = f"{config.location('judges')}.online.experiments"
    for index, ref in enumerate(config.judges.online.experiments):
        yield store.experiment_id(ref, where=f"{where}[{index}]")


@contextmanager
def scan_lock(state: Any, name: str, *, seconds: float) -> Iterator[bool]:
    """Hold the lock ``name`` (under the key prefix) for the block, if no one else does; yields whether it is held.

    Released at the end of the block, whatever happens in it; a lock that expired meanwhile is left to lapse.

    >>> with scan_lock(state, "scanlock:1", seconds=300) as held:  # doctest: +SKIP
    ...     if held:
    ...         scan_one("1")
    """
    lock = state.redis.lock(state.key(name), timeout=seconds, blocking=False)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        try:
            lock.release()
        except Exception:  # expired: the next scan takes it
            pass
