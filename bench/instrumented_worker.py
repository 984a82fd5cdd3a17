"""``tracejudge worker`` with timers around each step of an evaluation (benchmarks only).

Usage: ``python bench/instrumented_worker.py worker [CELERY OPTIONS...]`` with
``TJBENCH_PHASES_DIR`` set. Nothing in the package changes: the module-level
functions the task calls are wrapped before the worker starts (so prefork
children inherit the wrappers), and after each task one JSON line goes to
``$TJBENCH_PHASES_DIR/phases-<pid>.jsonl``:

``{"task_id", "trace_id", "queue_wait": s, "task": s, "evaluate": s,
"phases": {"get_trace": s, "lock": s, "redis_cache": s, "judges": s,
"write_back": s (every MLflow write of the trace, one concurrent batch), ...},
"ops": {<MLflow call>: [count, seconds], ...}}``

``ops`` is cumulative for the process (every ``call_mlflow`` by function
name, plus ``get_trace``). A timer costs about a microsecond.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from typing import Any, Callable

_local = threading.local()
_ops: dict[str, list[float]] = {}
_ops_lock = threading.Lock()
_files: dict[int, Any] = {}


def _phases() -> dict[str, float] | None:
    return getattr(_local, "phases", None)


def _add(name: str, seconds: float) -> None:
    phases = _phases()
    if phases is not None:
        phases[name] = phases.get(name, 0.0) + seconds


def _op(name: str, seconds: float) -> None:
    with _ops_lock:
        entry = _ops.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds


def _timed(name: str, fn: Callable[..., Any], *, op: str | None = None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            _add(name, elapsed)
            if op:
                _op(op, elapsed)

    return wrapper


def install() -> None:
    from celery import signals

    from tracejudge.mlflow_io import reader, writer
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks import entry, evaluate
    from tracejudge.tasks.loop import LoopRunner
    from tracejudge.tasks.state import RedisState

    entry.evaluate_request = evaluate.evaluate_request = _timed("evaluate", evaluate.evaluate_request)
    TraceStore.wait_for_trace = _timed("get_trace", TraceStore.wait_for_trace)  # type: ignore[method-assign]
    TraceStore.write_all = _timed("write_back", TraceStore.write_all)  # type: ignore[method-assign]
    RedisState.cached_results = _timed("redis_cache", RedisState.cached_results)  # type: ignore[method-assign]
    RedisState.cache_results = _timed("redis_cache", RedisState.cache_results)  # type: ignore[method-assign]
    reader.load_trace = _timed("load_trace", reader.load_trace, op="get_trace")

    original_call = writer.call_mlflow

    def call_mlflow(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_call(fn, *args, **kwargs)
        finally:
            _op(getattr(fn, "__name__", "call"), time.perf_counter() - started)

    writer.call_mlflow = call_mlflow

    # the REST writer's requests (http stores), counted per call like the client's
    from tracejudge.mlflow_io.rest import RestWriter

    original_rest_call = RestWriter.call

    async def rest_call(self: Any, op: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original_rest_call(self, op, *args, **kwargs)
        finally:
            _op(op, time.perf_counter() - started)

    RestWriter.call = rest_call  # type: ignore[method-assign]

    original_run = LoopRunner.run

    def run(self: Any, coro: Any, *, timeout: float | None = None) -> Any:
        started = time.perf_counter()
        try:
            return original_run(self, coro, timeout=timeout)
        finally:
            _add("judges", time.perf_counter() - started)

    LoopRunner.run = run  # type: ignore[method-assign]

    original_lock = RedisState.trace_lock

    @contextlib.contextmanager
    def trace_lock(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        with original_lock(self, *args, **kwargs) as held:
            _add("lock", time.perf_counter() - started)
            inner = time.perf_counter()
            try:
                yield held
            finally:
                release = time.perf_counter()
                _add("lock_held", release - inner)
        _add("lock", time.perf_counter() - release)

    RedisState.trace_lock = trace_lock  # type: ignore[method-assign]

    @signals.task_prerun.connect(weak=False)
    def _prerun(task_id: str = "", args: Any = None, **_: Any) -> None:
        _local.phases = {}
        _local.started = time.perf_counter()
        _local.started_wall = time.time()
        payload = args[0] if args else {}
        _local.enqueued_at = payload.get("enqueued_at") if isinstance(payload, dict) else None
        _local.trace_id = payload.get("trace_id") if isinstance(payload, dict) else None

    @signals.task_postrun.connect(weak=False)
    def _postrun(task_id: str = "", **_: Any) -> None:
        phases = _phases() or {}
        record = {
            "task_id": task_id,
            "trace_id": getattr(_local, "trace_id", None),
            "pid": os.getpid(),
            "thread": threading.get_ident(),
            "started": getattr(_local, "started_wall", None),
            "queue_wait": (_local.started_wall - _local.enqueued_at) if getattr(_local, "enqueued_at", None) else None,
            "task": time.perf_counter() - getattr(_local, "started", time.perf_counter()),
            "evaluate": phases.pop("evaluate", None),
            "phases": phases,
        }
        with _ops_lock:
            record["ops"] = {k: list(v) for k, v in _ops.items()}
        _local.phases = None
        _write(record)


def _write(record: dict[str, Any]) -> None:
    directory = os.environ.get("TJBENCH_PHASES_DIR")
    if not directory:
        return
    pid = os.getpid()
    with _ops_lock:
        handle = _files.get(pid)
        if handle is None:
            handle = _files[pid] = open(os.path.join(directory, f"phases-{pid}.jsonl"), "a", buffering=1)
        handle.write(json.dumps(record) + "\n")


WHATIFS = {
    "tags2": "write only the tracejudge.status and tracejudge.score trace tags (2 set_trace_tag calls instead of 5)",
    "metricsonly": "write_report logs the metrics (log_batch) but not the quality_assessment.json artifact (log_dict)",
    "noreport": "no write_report at all (no log_dict, no log_batch)",
    "nocooldown": "no Redis PTTL cool-down check before each judge call when no rate limit is configured",
    "noevents": "Celery without task events and without the STARTED state (worker_send_task_events/task_track_started off)",
    "nowrites": "no MLflow writes at all (feedback and summary skipped; the trace is still read): the store taken out",
}


def install_whatifs(names: list[str]) -> None:
    """Bench-only experiments: what a change elsewhere in the package would gain (see ``WHATIFS``)."""
    from tracejudge.mlflow_io import writer

    unknown = [n for n in names if n not in WHATIFS]
    if unknown:
        raise SystemExit(f"unknown TJBENCH_WHATIF {unknown}; known: {sorted(WHATIFS)}")
    if {"tags2", "metricsonly", "noreport"} & set(names):
        original_summary = writer.summary_calls
        drop = set()
        if "metricsonly" in names or "noreport" in names:
            drop.add("log_dict")
        if "noreport" in names:
            drop.add("log_batch")

        def summary_calls(client: Any, trace_id: str, *, tags: dict[str, str], **kwargs: Any) -> list[Any]:
            if "tags2" in names:
                tags = {k: v for k, v in tags.items() if k in ("tracejudge.status", "tracejudge.score")}
            calls = original_summary(client, trace_id, tags=tags, **kwargs)
            return [c for c in calls if getattr(c.args[0] if getattr(c, "args", None) else None, "__name__", "") not in drop]

        writer.summary_calls = summary_calls
    if "nowrites" in names:
        from tracejudge.mlflow_io.store import TraceStore

        TraceStore.write_all = lambda self, calls: [None] * len(calls)  # type: ignore[method-assign]
    if "nocooldown" in names:
        from tracejudge.tasks import ratelimit

        original_wait = ratelimit.RedisRateLimiter._wait_out_cool_down

        async def _wait_out_cool_down(self: Any, model: str) -> None:
            if self.per_second:
                await original_wait(self, model)

        ratelimit.RedisRateLimiter._wait_out_cool_down = _wait_out_cool_down
    if "noevents" in names:
        from tracejudge.worker import celery_app as app_module

        original_settings = app_module.celery_settings

        def celery_settings(settings: Any) -> dict[str, Any]:
            conf = original_settings(settings)
            conf.update(worker_send_task_events=False, task_track_started=False)
            return conf

        app_module.celery_settings = celery_settings


if __name__ == "__main__":
    whatifs = [w for w in os.environ.get("TJBENCH_WHATIF", "").split(",") if w]
    if whatifs:
        install_whatifs(whatifs)
    install()
    from tracejudge.cli import main

    sys.exit(main(sys.argv[1:]))
