"""``tracejudge worker`` with timers around each step of an evaluation (benchmarks only).

Usage: ``python bench/instrumented_worker.py worker [CELERY OPTIONS...]`` with
``TJBENCH_PHASES_DIR`` set (several ``--processes``: each supervised child runs this file, as ``child``). Nothing in the package changes: the module-level
functions the task calls are wrapped before the worker starts (so prefork
children inherit the wrappers), and after each task one JSON line goes to
``$TJBENCH_PHASES_DIR/phases-<pid>.jsonl``:

``{"task_id", "trace_id", "queue_wait": s, "task": s, "evaluate": s,
"phases": {"get_trace": s, "lock": s, "redis_cache": s, "judges": s,
"write_back": s (every MLflow write of the trace, one concurrent batch), ...},
"ops": {<MLflow call>: [count, seconds], ...}}``

``ops`` is cumulative for the process (every ``call_mlflow`` by function
name, plus ``get_trace``). A timer costs about a microsecond.

Every timed target is named in ``TIMED`` and must exist: when code moves, the
worker refuses to start (``MissingTarget``) instead of timing nothing, and
``tests/test_bench_instrumented.py`` fails.
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


class MissingTarget(SystemExit):
    """A timer's target moved or was renamed: this file must follow the code (it never skips silently)."""


def _target(dotted: str) -> tuple[Any, str]:
    """``("pkg.module", "Class.attr")`` style lookup: the owner object and the attribute name, or MissingTarget."""
    import importlib

    module_name, _, path = dotted.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent, None)
        if owner is None:
            break
    if owner is None or not hasattr(owner, name):
        raise MissingTarget(
            f"bench/instrumented_worker.py: {dotted} no longer exists; update the timer table (TIMED) to the code"
        )
    return owner, name


#: (target, phase, op): each wrapped with a timer; every target must exist (tests/test_bench_instrumented.py).
TIMED = (
    ("tracejudge.tasks.entry:evaluate_request", "evaluate", None),  # the name the Celery task calls
    ("tracejudge.mlflow_io.store:TraceStore.wait_for_trace", "get_trace", None),
    ("tracejudge.mlflow_io.reader:load_trace", "load_trace", "get_trace"),
    ("tracejudge.tasks.state:RedisState.cached_results", "redis_cache", None),
    ("tracejudge.tasks.state:RedisState.cache_results", "redis_cache", None),
    ("tracejudge.mlflow_io.store:TraceStore.write_all", "write_back", None),
    ("tracejudge.tasks.runtime:Runtime.run", "judges", None),
)
#: MLflow calls are counted by the name of the client method; a feedback is ``log_assessment`` today.
OP_NAMES = {"log_assessment": "log_feedback"}


def install() -> None:
    from celery import signals

    for dotted, phase, op in TIMED:
        owner, name = _target(dotted)
        setattr(owner, name, _timed(phase, getattr(owner, name), op=op))

    writer, name = _target("tracejudge.mlflow_io.writer:call_mlflow")
    original_call = getattr(writer, name)

    def call_mlflow(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_call(fn, *args, **kwargs)
        finally:
            op = getattr(fn, "__name__", "call")
            _op(OP_NAMES.get(op, op), time.perf_counter() - started)

    setattr(writer, name, call_mlflow)

    # the REST writer's requests (http stores), counted per call like the client's
    rest, name = _target("tracejudge.mlflow_io.rest:RestWriter.call")
    original_rest_call = getattr(rest, name)

    async def rest_call(self: Any, op: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original_rest_call(self, op, *args, **kwargs)
        finally:
            _op(op, time.perf_counter() - started)

    setattr(rest, name, rest_call)

    state, name = _target("tracejudge.tasks.state:RedisState.trace_lock")
    original_lock = getattr(state, name)

    @contextlib.contextmanager
    def trace_lock(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        with original_lock(*args, **kwargs) as held:
            _add("lock", time.perf_counter() - started)
            inner = time.perf_counter()
            try:
                yield held
            finally:
                release = time.perf_counter()
                _add("lock_held", release - inner)
        _add("lock", time.perf_counter() - release)

    setattr(state, name, trace_lock)

    # `tracejudge worker` with several processes: each supervised child runs this file too (timers in every process)
    supervisor, name = _target("tracejudge.worker.supervisor:subprocess")
    setattr(supervisor, name, _ChildCommand(getattr(supervisor, name)))

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


class _ChildCommand:
    """``subprocess`` for ``worker/supervisor.py``: ``python -m tracejudge.worker.child ...`` becomes
    ``python bench/instrumented_worker.py child ...``; everything else is the module's own."""

    CHILD = ["-m", "tracejudge.worker.child"]

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def Popen(self, cmd: list[str], *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (subprocess's name)
        if list(cmd[1:3]) == self.CHILD:
            cmd = [cmd[0], os.path.abspath(__file__), "child", *cmd[3:]]
        return self._module.Popen(cmd, *args, **kwargs)


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
    "tags2": "write only the tracejudge.status and tracejudge.score trace tags (no attempt/retry_of/plan tag where they apply)",
    "metricsonly": "write_report logs the metrics (log_batch) but not the quality_assessment.json artifact (log_dict)",
    "noreport": "no write_report at all (no log_dict, no log_batch; what artifact_level: minimal does since 2026-11-29)",
    "nocooldown": "no Redis PTTL cool-down check before each judge call when no rate limit is configured",
    "noevents": "Celery without task events and without the STARTED state (worker_send_task_events/task_track_started "
    "off; events are off by default since 2026-11-29, so this now takes out the STARTED write only)",
    "nowrites": "no MLflow writes at all (feedback and summary skipped; the trace is still read): the store taken out",
}


def install_whatifs(names: list[str]) -> None:
    """Bench-only experiments: what a change elsewhere in the package would gain (see ``WHATIFS``)."""
    unknown = [n for n in names if n not in WHATIFS]
    if unknown:
        raise SystemExit(f"unknown TJBENCH_WHATIF {unknown}; known: {sorted(WHATIFS)}")
    if {"tags2", "metricsonly", "noreport"} & set(names):
        writer, name = _target("tracejudge.mlflow_io.writer:summary_calls")
        original_summary = getattr(writer, name)
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

        setattr(writer, name, summary_calls)
    if "nowrites" in names:
        store, name = _target("tracejudge.mlflow_io.store:TraceStore.write_all")
        setattr(store, name, lambda self, calls: [None] * len(calls))
    if "nocooldown" in names:
        limiter, name = _target("tracejudge.tasks.ratelimit:RedisRateLimiter._wait_out_cool_down")
        original_wait = getattr(limiter, name)

        async def _wait_out_cool_down(self: Any, model: str) -> None:
            if self.per_second:
                await original_wait(self, model)

        setattr(limiter, name, _wait_out_cool_down)
    if "noevents" in names:
        app_module, name = _target("tracejudge.worker.celery_app:celery_settings")
        original_settings = getattr(app_module, name)

        def celery_settings(settings: Any) -> dict[str, Any]:
            conf = original_settings(settings)
            conf.update(worker_send_task_events=False, task_track_started=False)
            return conf

        setattr(app_module, name, celery_settings)


if __name__ == "__main__":
    whatifs = [w for w in os.environ.get("TJBENCH_WHATIF", "").split(",") if w]
    if whatifs:
        install_whatifs(whatifs)
    install()
    if sys.argv[1:2] == ["child"]:  # one supervised process of `tracejudge worker` (see _ChildCommand)
        from tracejudge.worker import child

        sys.exit(child.main(sys.argv[2:]))
    from tracejudge.cli import main

    sys.exit(main(sys.argv[1:]))
