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
    from tracejudge.tasks import evaluate, runtime

    for name, phase in (
        ("wait_for_trace", "get_trace"),
        ("cached_results", "redis_cache"),
        ("cache_results", "redis_cache"),
        ("write_summary", "write_summary"),
        ("evaluate_request", "evaluate"),
    ):
        if hasattr(evaluate, name):
            setattr(evaluate, name, _timed(phase, getattr(evaluate, name)))
    reader.load_trace = _timed("load_trace", reader.load_trace, op="get_trace")
    # Older and newer layouts of the write-back: time whichever exists.
    for name, phase in (("write_all", "write_back"), ("write_results", "write_feedback"),
                        ("set_trace_tags", "summary_tags"), ("write_report", "summary_report")):
        if hasattr(writer, name):
            setattr(writer, name, _timed(phase, getattr(writer, name)))

    original_call = writer.call_mlflow

    def call_mlflow(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_call(fn, *args, **kwargs)
        finally:
            _op(getattr(fn, "__name__", "call"), time.perf_counter() - started)

    writer.call_mlflow = call_mlflow

    original_run = runtime.Runtime.run

    def run(self: Any, coro: Any, *, timeout: float | None = None) -> Any:
        started = time.perf_counter()
        try:
            return original_run(self, coro, timeout=timeout)
        finally:
            _add("judges", time.perf_counter() - started)

    runtime.Runtime.run = run

    if hasattr(evaluate, "trace_lock"):
        original_lock = evaluate.trace_lock

        @contextlib.contextmanager
        def trace_lock(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            with original_lock(*args, **kwargs) as waited:
                _add("lock", time.perf_counter() - started)
                inner = time.perf_counter()
                try:
                    yield waited
                finally:
                    release = time.perf_counter()
                    _add("lock_held", release - inner)
            _add("lock", time.perf_counter() - release)

        evaluate.trace_lock = trace_lock

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
    if hasattr(writer, "summary_calls") and ({"tags2", "metricsonly", "noreport"} & set(names)):
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
    elif "tags2" in names or "metricsonly" in names or "noreport" in names:  # the older layout
        if "tags2" in names:
            original_tags = writer.set_trace_tags

            def set_trace_tags(client: Any, trace_id: str, tags: dict[str, str]) -> None:
                keep = {k: v for k, v in tags.items() if k in ("tracejudge.status", "tracejudge.score")}
                return original_tags(client, trace_id, keep)

            writer.set_trace_tags = set_trace_tags
        if "metricsonly" in names or "noreport" in names:
            skip_metrics = "noreport" in names

            def write_report(client: Any, run_id: str, trace_id: str, report: dict, metrics: dict) -> str:
                from mlflow.entities import Metric

                if not skip_metrics:
                    now = int(time.time() * 1000)
                    writer.call_mlflow(client.log_batch, run_id,
                                       metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
                return f"runs:/{run_id}/tracejudge/{trace_id}/{writer.ARTIFACT_NAME}"

            writer.write_report = write_report
    if "nowrites" in names:
        from tracejudge.tasks import evaluate

        if hasattr(writer, "write_all"):
            writer.write_all = lambda calls, **_: [None] * len(calls)
        else:
            writer.write_results = lambda trace_id, results, **_: [f"not-written-{i}" for i in range(len(results))]
            evaluate.write_summary = lambda runtime, loaded, verdict: None
    if "nocooldown" in names:
        from tracejudge.tasks import ratelimit

        original_wait = ratelimit.RedisRateLimiter._wait_out_cool_down

        async def _wait_out_cool_down(self: Any, model: str) -> None:
            if self.per_second:
                await original_wait(self, model)

        ratelimit.RedisRateLimiter._wait_out_cool_down = _wait_out_cool_down
    if "noevents" in names:
        from tracejudge.worker import app as app_module

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
