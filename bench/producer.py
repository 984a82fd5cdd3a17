"""Producer cost: ``enqueue()`` in the calling process, and the workflow's wall time with and without it.

``python bench/producer.py --calls 2000 --workflows 40 --experiment-id E`` with
``TRACEJUDGE_REDIS_URL``, ``TRACEJUDGE_KEY_PREFIX`` (a prefix no worker reads,
so nothing is judged), ``TRACEJUDGE_CONFIG`` and ``MLFLOW_TRACKING_URI`` set.
Prints one JSON line. Measured:

* ``blocking``: ``enqueue(trace_id)`` back to back (``calls`` times), each
  timed with ``perf_counter_ns``;
* ``non_blocking``: ``enqueue(trace_id, block=False)`` the same way, then
  ``flush()``; the sender's own rate is messages / (last enqueue to flush done);
* ``*_after_sleep``: the same with a 20 ms sleep between calls, with
  ``baseline_after_sleep`` (a trivial function timed the same way) to show
  what waking an idle CPU costs on this machine by itself;
* ``workflow``: the sample workflow (``record_article_trace``: a run and a
  4-span trace) alone, then followed by a blocking, then a non-blocking
  enqueue; interleaved, ``workflows`` times each;
* ``delivered``: messages found on the queue afterwards (must equal the number enqueued).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _summary(ns: list[int]) -> dict:
    data = sorted(ns)
    n = len(data)
    return {
        "n": n,
        "p50_us": data[n // 2] / 1e3,
        "p90_us": data[int(n * 0.9)] / 1e3,
        "p99_us": data[min(n - 1, int(n * 0.99))] / 1e3,
        "max_us": data[-1] / 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sleep-calls", type=int, default=300)
    parser.add_argument("--workflows", type=int, default=40)
    parser.add_argument("--experiment-id", required=True)
    args = parser.parse_args()

    import mlflow
    import redis

    import tracejudge
    from tracejudge.sender import get_sender
    from tracejudge.testing.workflows import record_article_trace

    mlflow.set_experiment(experiment_id=args.experiment_id)
    ids = ["tr-" + uuid.uuid4().hex for _ in range(3 * args.calls + 3 * args.sleep_calls + 400)]
    it = iter(ids)
    enqueued = 0

    # warm both paths: app, connections, first-call imports, the sender thread
    for _ in range(100):
        tracejudge.enqueue(next(it))
        tracejudge.enqueue(next(it), block=False)
        enqueued += 2
    sender = get_sender()
    sender.flush(60)

    out: dict = {}
    ns = []
    for _ in range(args.calls):
        trace_id = next(it)
        t = time.perf_counter_ns()
        tracejudge.enqueue(trace_id)
        ns.append(time.perf_counter_ns() - t)
    enqueued += args.calls
    out["blocking"] = _summary(ns)

    ns = []
    first = time.perf_counter()
    for _ in range(args.calls):
        trace_id = next(it)
        t = time.perf_counter_ns()
        tracejudge.enqueue(trace_id, block=False)
        ns.append(time.perf_counter_ns() - t)
    flushed = sender.flush(120)
    out["non_blocking"] = _summary(ns)
    out["non_blocking"]["sender_msgs_per_s"] = args.calls / (time.perf_counter() - first)
    out["non_blocking"]["flushed"] = flushed
    enqueued += args.calls

    # the same with the garbage collector off: the path's own cost, without the collections
    # that any allocation in the process may trigger (attribution only; not a recommendation)
    import gc

    ns = []
    sender.flush(60)
    gc.disable()
    for _ in range(args.calls):
        trace_id = next(it)
        t = time.perf_counter_ns()
        tracejudge.enqueue(trace_id, block=False)
        ns.append(time.perf_counter_ns() - t)
    gc.enable()
    sender.flush(120)
    out["non_blocking_gc_off"] = _summary(ns)
    enqueued += args.calls

    def trivial() -> dict:
        return {i: str(i) for i in range(20)}

    for name, call in (
        ("baseline_after_sleep", lambda t: trivial()),
        ("blocking_after_sleep", lambda t: tracejudge.enqueue(t)),
        ("non_blocking_after_sleep", lambda t: tracejudge.enqueue(t, block=False)),
    ):
        ns = []
        for _ in range(args.sleep_calls):
            trace_id = next(it)
            time.sleep(0.02)
            t = time.perf_counter_ns()
            call(trace_id)
            ns.append(time.perf_counter_ns() - t)
        if name != "baseline_after_sleep":
            enqueued += args.sleep_calls
        out[name] = _summary(ns)
    sender.flush(60)

    record_article_trace()  # warm the workflow itself
    walls: dict[str, list[float]] = {"none": [], "blocking": [], "non_blocking": []}
    for _ in range(args.workflows):
        for mode in walls:
            t = time.perf_counter()
            trace_id = record_article_trace()
            if mode == "blocking":
                tracejudge.enqueue(trace_id)
            elif mode == "non_blocking":
                tracejudge.enqueue(trace_id, block=False)
            walls[mode].append((time.perf_counter() - t) * 1000)
    enqueued += 2 * args.workflows
    sender.flush(60)
    out["workflow_ms"] = {
        mode: {"p50": sorted(v)[len(v) // 2], "mean": sum(v) / len(v), "n": len(v)} for mode, v in walls.items()
    }
    out["sender"] = sender.stats()

    prefix = os.environ.get("TRACEJUDGE_KEY_PREFIX", "")
    client = redis.Redis.from_url(os.environ["TRACEJUDGE_REDIS_URL"])
    out["enqueued"] = enqueued
    out["delivered"] = client.llen(f"{prefix}tracejudge.online")
    mlflow.flush_trace_async_logging()
    print(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
