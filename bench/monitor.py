"""How fast the monitor summarises a window: Redis rollups vs paged MLflow search_traces, in one run.

    .venv/bin/python bench/monitor.py                 # 100,000 traces in Redis, 300 in MLflow (~3 minutes)
    .venv/bin/python bench/monitor.py --traces 20000 --mlflow-traces 100

It starts a private redis-server (no append-only file) and a fresh sqlite MLflow store, then:

1. counts ``--traces`` judged traces spread over 7 days into Redis exactly as workers do (``record_verdict``:
   the demo's shape, 2 nodes x 3 judges = 6 results); the first 2,000 one pipeline each, as a worker sends them
   (their time is the worker's added cost), the rest 500 to a pipeline to fill the week faster;
2. summarises the 7-day window from Redis (``summarise_quality(source="redis")``, day and hour buckets, 3 runs
   each; the median is the figure, the target is under 10 s);
3. the baseline in the same run: ``--mlflow-traces`` traces written to MLflow the way workers write them, then
   summarised from MLflow (paged ``search_traces`` + ``query_trace_metrics``): traces per second, and what
   100,000 would take at that rate.

Prints a table and writes ``bench/results/monitor-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

from _common import BENCH_DIR, machine, write_json  # noqa: E402

DAY = 86_400_000
SAMPLE = 2000  # traces written one pipeline each, to time the worker's cost
SHAPE = [("research", "relevance"), ("research", "groundedness"), ("research", "harmfulness"),
         ("write", "coherence"), ("write", "completeness"), ("write", "harmfulness")]


def scores(rng: random.Random) -> dict:
    out = {pair: rng.uniform(0.5, 1.0) for pair in SHAPE}
    if rng.random() < 0.03:
        out[("research", "groundedness")] = "TIMEOUT"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=100_000, help="traces counted into Redis (default 100,000)")
    parser.add_argument("--mlflow-traces", type=int, default=300, help="traces written to MLflow for the baseline (default 300)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    import mlflow
    import redis as redis_lib

    from tracejudge.monitor import MonitorQuery, summarise_quality
    from tracejudge.monitor.rollup_store import record_verdict
    from tracejudge.testing.monitor_data import judged, record, seed_mlflow
    from tracejudge.testing.processes import RedisServer

    rng = random.Random(7)
    now = int(time.time() * 1000)
    work = Path(tempfile.mkdtemp(prefix="tj-bench-monitor-"))
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    experiment_id = mlflow.create_experiment("bench-monitor", artifact_location=(work / "artifacts").as_uri())
    results: dict = {"machine": machine(), "traces": args.traces, "mlflow_traces": args.mlflow_traces, "results_per_trace": len(SHAPE)}

    with RedisServer(appendonly=False, directory=work / "redis") as server:
        redis = redis_lib.Redis.from_url(server.url)
        # 1. what workers do, one pipeline (one round trip) per trace
        records = [record(f"tr-{i:08x}", now - 7 * DAY + 600_000 + int(rng.random() * (7 * DAY - 700_000)), judged(scores(rng), rng=rng))
                   for i in range(args.traces)]
        records.sort(key=lambda r: r.timestamp_ms)
        per_trace = []
        started = time.perf_counter()
        for i, rec in enumerate(records):
            if i < SAMPLE:  # what a worker pays: one pipeline (one round trip) per trace
                t = time.perf_counter()
                pipe = redis.pipeline(transaction=False)
                record_verdict(pipe, rec, experiment_id=experiment_id)
                pipe.execute()
                per_trace.append(time.perf_counter() - t)
            else:  # the rest in batches, only to fill the window faster
                if (i - SAMPLE) % 500 == 0:
                    pipe = redis.pipeline(transaction=False)
                record_verdict(pipe, rec, experiment_id=experiment_id)
                if (i - SAMPLE) % 500 == 499 or i == len(records) - 1:
                    pipe.execute()
        seed_seconds = time.perf_counter() - started
        used = int(redis.info("memory")["used_memory"])
        results["rollup_write"] = {
            "seconds": round(seed_seconds, 1),
            "per_trace_ms_p50": round(statistics.median(per_trace) * 1000, 3),  # over the first SAMPLE traces
            "per_trace_ms_p99": round(sorted(per_trace)[int(len(per_trace) * 0.99)] * 1000, 3),
            "redis_memory_mb": round(used / 1e6, 1),
        }
        print(f"rollups: {args.traces:,} traces written in {seed_seconds:.1f} s "
              f"(p50 {results['rollup_write']['per_trace_ms_p50']} ms per trace), Redis {used / 1e6:.0f} MB", flush=True)

        # 2. the summary from Redis
        for bucket in ("day", "hour"):
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                s = summarise_quality(MonitorQuery(experiment=experiment_id, since="7d", bucket=bucket, source="redis"), redis=redis, prefix="", now_ms=now)
                times.append(time.perf_counter() - t)
            assert s.totals.traces == args.traces, (s.totals.traces, args.traces)
            results[f"redis_summary_{bucket}"] = {"median_s": round(statistics.median(times), 3), "runs_s": [round(x, 3) for x in times]}
            print(f"summary from Redis, 7 days, {bucket} buckets: median {statistics.median(times):.2f} s over {args.runs} runs "
                  f"({s.totals.traces:,} traces, {s.totals.results:,} results)", flush=True)

    # 3. the baseline: the same summary from MLflow
    t = time.perf_counter()
    seed_mlflow(experiment_id, [(now - 7 * DAY + 600_000 + int(rng.random() * (7 * DAY - 700_000)), judged(scores(rng), rng=rng))
                                for _ in range(args.mlflow_traces)])
    write_s = time.perf_counter() - t
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        s = summarise_quality(MonitorQuery(experiment=experiment_id, since="7d", source="mlflow"), now_ms=now)
        times.append(time.perf_counter() - t)
    assert s.totals.traces == args.mlflow_traces
    median = statistics.median(times)
    rate = args.mlflow_traces / median
    results["mlflow_summary"] = {"median_s": round(median, 3), "runs_s": [round(x, 3) for x in times], "traces_per_s": round(rate, 1),
                                 "projected_s_for_traces": round(args.traces / rate, 1), "seed_seconds": round(write_s, 1)}
    print(f"summary from MLflow (sqlite), {args.mlflow_traces} traces: median {median:.2f} s = {rate:,.0f} traces/s; "
          f"{args.traces:,} traces would take ~{args.traces / rate:,.0f} s", flush=True)

    out = BENCH_DIR / "results" / f"monitor-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, results)
    r = results
    print()
    print("| measurement | figure |")
    print("|---|---|")
    print(f"| summary of {args.traces:,} traces / 7 days from Redis rollups, day buckets (median of {args.runs}) | {r['redis_summary_day']['median_s']} s |")
    print(f"| the same, hour buckets | {r['redis_summary_hour']['median_s']} s |")
    print(f"| the same from MLflow, paged search_traces (sqlite) | {r['mlflow_summary']['traces_per_s']} traces/s -> ~{r['mlflow_summary']['projected_s_for_traces']:,} s projected |")
    print(f"| worker's added cost per trace (one pipelined round trip) | p50 {r['rollup_write']['per_trace_ms_p50']} ms, p99 {r['rollup_write']['per_trace_ms_p99']} ms |")
    print(f"| Redis memory for {args.traces:,} traces of rollups | {r['rollup_write']['redis_memory_mb']} MB |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
