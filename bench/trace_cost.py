#!/usr/bin/env python
"""What one evaluation costs, per trace: MLflow calls, SQL statements, Redis round trips, and the CPU of each step.

    .venv/bin/python bench/trace_cost.py [--traces 30] [--store sqlite|postgres] [--config standard|minimal]

Starts what ``run.py`` starts (a private redis-server, the test LLM at 200 ms in its own process, a fresh
sqlite store or an ``mlflow server`` on PostgreSQL), records ``--traces`` demo traces, then runs
``tasks.evaluate_request`` on them in this process, **one at a time** (a worker's ``Runtime``, real Redis, real
MLflow, the fake LLM over HTTP; no Celery), and counts per trace:

* MLflow calls by operation (every ``get_trace`` and write, as ``tracejudge_mlflow_calls_total`` counts them);
* SQL statements by kind (sqlite store only: SQLAlchemy in this process) and Redis round trips (sync and asyncio);
* process CPU of each step (one evaluation at a time, so the process's CPU during a step is that step's; the
  judges run on the loop thread and the writes on the write pool, both inside their step) and the calling
  thread's CPU per MLflow call.

CPU time, not wall time, is what it reports, so a loaded machine changes the figures little (caches, frequency);
still, compare shares within a run, not figures across machines. Celery's own part (the task shell, the result
backend) is not in here: ``sweep.py --profile`` samples a whole worker.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

_cpu: dict[str, float] = defaultdict(float)
_calls: Counter[str] = Counter()
_call_cpu: dict[str, float] = defaultdict(float)
_sql: Counter[str] = Counter()
_redis: Counter[str] = Counter()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _cpu[name] += time.process_time() - started

    return wrapper


def _patch(owner: Any, name: str, step: str) -> None:
    setattr(owner, name, _timed(step, getattr(owner, name)))


def install() -> None:
    """Timers on the evaluation's steps (module attributes the evaluation calls), and the counters."""
    import redis.asyncio.connection as aconn
    import redis.connection as conn
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from tracejudge.mlflow_io import reader, writer
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.ops import metrics
    from tracejudge.tasks import evaluate, rollup_step
    from tracejudge.tasks.runtime import Runtime
    from tracejudge.tasks.state import RedisState

    _patch(reader, "_get_trace", "get_trace: MLflow")
    _patch(reader, "extract_targets", "get_trace: targets")
    _patch(evaluate, "runtime_plan", "plan")
    _patch(evaluate, "plan_jobs", "plan")
    _patch(RedisState, "cached_results", "redis: result cache")
    _patch(RedisState, "cache_results", "redis: result cache")
    _patch(RedisState, "forget_results", "redis: result cache")
    _patch(Runtime, "run", "judges")
    _patch(evaluate, "build_verdict", "verdict")
    _patch(evaluate, "trace_tool_usage", "verdict")
    _patch(evaluate, "summary_calls", "summary (report, metrics)")
    _patch(TraceStore, "write_all", "write-back")
    _patch(rollup_step, "before_writeback", "rollup")
    _patch(evaluate, "record_rollup", "rollup")
    _patch(evaluate, "route_for_review", "review, retries")
    _patch(evaluate, "retry_transient_failures", "review, retries")
    _patch(evaluate, "evaluate_request", "total")

    original_lock = RedisState.trace_lock

    @contextlib.contextmanager
    def trace_lock(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        with original_lock(self, *args, **kwargs) as held:
            _cpu["redis: lock"] += time.process_time() - started
            yield held
            started = time.process_time()
        _cpu["redis: lock"] += time.process_time() - started

    RedisState.trace_lock = trace_lock  # type: ignore[method-assign]

    original_count = metrics.count_mlflow_call
    metrics.count_mlflow_call = lambda op, outcome: (_calls.update([op]), original_count(op, outcome))[1]  # type: ignore[assignment]

    original_call = writer.call_mlflow

    def call_mlflow(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original_call(fn, *args, **kwargs)
        finally:
            _call_cpu[getattr(fn, "__name__", "call")] += time.thread_time() - started

    writer.call_mlflow = call_mlflow  # type: ignore[assignment]
    original_get = reader._get_trace

    def get_trace(client: Any, trace_id: str) -> Any:
        started = time.thread_time()
        try:
            return original_get(client, trace_id)
        finally:
            _call_cpu["get_trace"] += time.thread_time() - started

    reader._get_trace = get_trace  # type: ignore[assignment]

    @event.listens_for(Engine, "before_cursor_execute")
    def _count_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        _sql[statement.lstrip().split(None, 1)[0].upper()] += 1

    @event.listens_for(Engine, "commit")
    def _count_commit(_conn: Any) -> None:
        _sql["COMMIT"] += 1

    @event.listens_for(Engine, "connect")
    def _count_connect(*_: Any) -> None:  # a new database connection (the pool had none free)
        _sql["new connection"] += 1

    sync_send = conn.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> Any:
        _redis["sync"] += 1
        return sync_send(self, command, check_health)

    conn.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    async_send = aconn.AbstractConnection.send_packed_command

    async def asend(self: Any, command: Any, check_health: bool = True) -> Any:
        _redis["asyncio"] += 1
        return await async_send(self, command, check_health)

    aconn.AbstractConnection.send_packed_command = asend  # type: ignore[method-assign]


def reset() -> None:
    for counter in (_cpu, _calls, _call_cpu, _sql, _redis):
        counter.clear()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", type=int, default=30)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--config", choices=["standard", "minimal"], default="standard",
                   help="the bench config, or it with artifact_level: minimal")
    p.add_argument("--concurrency", type=int, default=1,
                   help="evaluations at once on a thread pool (as a worker's -c); above 1 the steps' CPU overlaps, "
                        "so only the total and the per-call CPU (each calling thread's) are printed")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    with ExitStack() as stack:
        services = h.start_services(stack, base=Path(tempfile.mkdtemp(prefix="tracejudge-cost-")))
        store = h.postgres_store(services) if args.store == "postgres" else h.sqlite_store(services)
        if args.config == "minimal":
            services.config_path.write_text(h.minimal_config())
        warm = h.make_traces(store, 3, "warm")
        traces = h.make_traces(store, args.traces, "cost")
        os.environ.update(services.worker_env(store, "cost:"))
        install()

        from tracejudge.config import Settings, load_config
        from tracejudge.payload import EvaluationRequest
        from tracejudge.tasks import evaluate
        from tracejudge.tasks.runtime import Runtime

        settings = Settings.from_env()
        runtime = Runtime(settings=settings, config=load_config(settings.config_path))
        stack.callback(runtime.close)
        for trace_id in warm:  # connections, imports, the online run's look-up
            evaluate.evaluate_request(EvaluationRequest(trace_id=trace_id), runtime)
        reset()

        def one(trace_id: str) -> None:
            verdict = evaluate.evaluate_request(EvaluationRequest(trace_id=trace_id), runtime)
            if verdict.errors or len(verdict.results()) != h.JUDGES_PER_TRACE:
                raise RuntimeError(f"{trace_id}: {verdict.summary()}")

        wall = time.perf_counter()
        cpu = time.process_time()
        if args.concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                list(pool.map(one, traces))
        else:
            for trace_id in traces:
                one(trace_id)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    n = len(traces)
    total = _cpu.pop("total")
    print(f"\n{n} traces, {args.store} store, {args.config} config, {args.concurrency} at a time; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nprocess CPU per trace: {cpu / n * 1000:.1f} ms (wall {wall / n * 1000:.0f} ms per trace)")
    if args.concurrency == 1:
        print_steps(total, n)
    print_counts(n)
    return 0


def print_steps(total: float, n: int) -> None:
    print(f"\nevaluate_request: {total / n * 1000:.1f} ms of CPU per trace")
    print("| step | CPU ms per trace | share |")
    print("|---|---|---|")
    named = 0.0
    for step, seconds in sorted(_cpu.items(), key=lambda kv: -kv[1]):
        named += seconds
        print(f"| {step} | {seconds / n * 1000:.1f} | {seconds / total * 100:.0f} % |")
    print(f"| other (evaluate_request itself) | {(total - named) / n * 1000:.1f} | {(total - named) / total * 100:.0f} % |")


def print_counts(n: int) -> None:
    print("\nMLflow calls per trace (calling thread's CPU per call)")
    print("| call | per trace | CPU ms per call |")
    print("|---|---|---|")
    for op, count in _calls.most_common():
        cpu = _call_cpu.get(op) or _call_cpu.get(op.replace("log_feedback", "log_assessment"))
        print(f"| {op} | {count / n:g} | {'' if cpu is None else f'{cpu / count * 1000:.1f}'} |")
    print(f"| **all** | **{sum(_calls.values()) / n:g}** | |")
    if _sql:
        print("\nSQL statements per trace (this process): " + ", ".join(f"{k} {v / n:g}" for k, v in _sql.most_common()))
    print("Redis round trips per trace: " + ", ".join(f"{k} {v / n:g}" for k, v in _redis.most_common()))


if __name__ == "__main__":
    sys.exit(main())
