"""The store's own write ceiling: raw ``mlflow.log_feedback`` calls per second from one process.

``python bench/ceiling.py --trace-ids a,b,c --threads 8 --calls 400 --start-at EPOCH``
(``MLFLOW_TRACKING_URI`` from the environment) prints one JSON line:
``{"calls", "errors", "start", "end", "p50_ms", "p95_ms"}``. Each call logs
a feedback shaped like ours (float value, rationale, span id, the same
metadata keys), spread over the given traces. Several of these processes,
started with the same ``--start-at``, measure the ceiling at the
concurrency of several worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace-ids", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400, help="calls per process (after 10 warm-up calls)")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to start at (to line up processes)")
    parser.add_argument("--writer", choices=("client", "rest"), default="client",
                        help="client: mlflow.log_feedback on --threads threads; rest: tracejudge's REST writer, "
                             "--threads requests in flight on one event loop (http stores)")
    args = parser.parse_args()

    import mlflow
    from mlflow import MlflowClient

    from tracejudge.judges.model import JudgeResult, utc_now
    from tracejudge.mlflow_io.writer import feedback_kwargs

    client = MlflowClient()
    trace_ids = [t for t in args.trace_ids.split(",") if t]
    spans = {t: client.get_trace(t).data.spans[0].span_id for t in trace_ids}

    def kwargs_for(i: int) -> dict:
        trace_id = trace_ids[i % len(trace_ids)]
        result = JudgeResult(
            name=f"ceiling_{i % 6}", target="research", span_id=spans[trace_id], score=0.85, threshold=0.8,
            passed=True, greater_is_better=True, rationale="tracejudge-fake-llm: default score", model="gpt-4o-mini",
            duration_ms=201.3, timestamp=utc_now(), attempts=1, key=f"ceiling-{i}",
        )
        return feedback_kwargs(trace_id, result, evaluation_id="ceiling")

    for i in range(10):  # warm: connections, sessions, first-call imports
        mlflow.log_feedback(**kwargs_for(i))
    if args.writer == "rest":
        return rest_ceiling(args, trace_ids, spans)

    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    counter = iter(range(args.calls))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def run() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            kw = kwargs_for(i)
            started = time.perf_counter()
            try:
                mlflow.log_feedback(**kw)
            except Exception as exc:  # counted, not hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    start = time.time()
    cpu_start = time.process_time()
    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.time()
    cpu = time.process_time() - cpu_start
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "calls": n,
        "errors": len(errors),
        "error_sample": errors[:3],
        "start": start,
        "end": end,
        "p50_ms": latencies[n // 2] * 1000 if n else None,
        "p95_ms": latencies[int(n * 0.95)] * 1000 if n else None,
        "cpu_ms_per_call": cpu / n * 1000 if n else None,
    }))
    sys.stdout.flush()
    return 0


def rest_ceiling(args: argparse.Namespace, trace_ids: list[str], spans: dict[str, str]) -> int:
    """The same writes through :class:`tracejudge.mlflow_io.rest.RestWriter`, ``--threads`` in flight."""
    import asyncio

    from tracejudge.judges.model import JudgeResult, utc_now
    from tracejudge.mlflow_io.rest import rest_writer_for

    writer = rest_writer_for(os.environ["MLFLOW_TRACKING_URI"], max_connections=args.threads)
    if writer is None:
        raise SystemExit("--writer rest needs an http(s) MLFLOW_TRACKING_URI")

    def result_for(i: int) -> tuple[str, JudgeResult]:
        trace_id = trace_ids[i % len(trace_ids)]
        return trace_id, JudgeResult(
            name=f"ceiling_{i % 6}", target="research", span_id=spans[trace_id], score=0.85, threshold=0.8,
            passed=True, greater_is_better=True, rationale="tracejudge-fake-llm: default score", model="gpt-4o-mini",
            duration_ms=201.3, timestamp=utc_now(), attempts=1, key=f"ceiling-{i}",
        )

    latencies: list[float] = []
    errors: list[str] = []

    async def one(i: int, sem: asyncio.Semaphore) -> None:
        async with sem:
            trace_id, result = result_for(i)
            started = time.perf_counter()
            try:
                await writer.log_feedback(trace_id, result, evaluation_id="ceiling")
            except Exception as exc:  # counted, not hidden
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            latencies.append(time.perf_counter() - started)

    async def run_all() -> tuple[float, float, float]:
        sem = asyncio.Semaphore(args.threads)
        await asyncio.gather(*(one(i, sem) for i in range(10)))  # warm the connections
        latencies.clear()
        if args.start_at:
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
        start, cpu_start = time.time(), time.process_time()
        await asyncio.gather(*(one(i, sem) for i in range(args.calls)))
        end, cpu = time.time(), time.process_time() - cpu_start
        await writer.aclose()
        return start, end, cpu

    start, end, cpu = asyncio.run(run_all())
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "calls": n, "errors": len(errors), "error_sample": errors[:3], "start": start, "end": end,
        "p50_ms": latencies[n // 2] * 1000 if n else None, "p95_ms": latencies[int(n * 0.95)] * 1000 if n else None,
        "cpu_ms_per_call": cpu / n * 1000 if n else None,
    }))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
