#!/usr/bin/env python
"""What the Prometheus metrics cost per trace (issue 20 point 1), in CPU.

    .venv/bin/python bench/metrics_cost.py [--traces N] [--rounds R] [--quick]

Two measurements:

1. **the hooks alone** (no worker): the recording one evaluation makes (1 evaluation, 6 judge results
   with tokens and cost, 6 LLM round trips, 6 rate-limit waits, 10 MLflow calls, 1 trace lag), timed
   over many evaluations, in a process with the in-process registry (``--processes 1``) and in one
   writing prometheus_client's multiprocess files (a child of ``tracejudge worker --processes N``);
2. **a worker, end to end**: worker CPU per trace (``bench/harness.py``'s throughput run, one
   ``--processes 1`` worker, the test LLM at 200 ms) with metrics off and with
   ``TRACEJUDGE_METRICS_PORT`` set and ``/metrics`` scraped every second, alternating ``--rounds`` times.

Prints both and the load average before and after; run it on a quiet machine (``--quick``: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

JUDGES = 6
MLFLOW_CALLS = 10


def hooks_per_trace(evaluations: int) -> float:
    """Microseconds of CPU the metric hooks of one evaluation take, in this process."""
    from tracejudge.judges.model import JudgeResult, TokenUsage
    from tracejudge.ops import metrics

    metrics.enable()
    results = [
        JudgeResult(name=f"judge{i}", threshold=0.5, score=0.8, model="gpt-4o-mini", tokens=TokenUsage(prompt=600, completion=40),
                    cost_usd=0.0001)
        for i in range(JUDGES)
    ]
    metrics.QUEUE.set("tracejudge.online")
    started = time.process_time()
    for _ in range(evaluations):
        for _ in range(JUDGES):
            metrics.observe_rate_limit_wait(model="gpt-4o-mini", seconds=0.001)
            metrics.observe_llm_call(model="gpt-4o-mini", seconds=0.2)
        for _ in range(MLFLOW_CALLS):
            metrics.count_mlflow_call("log_assessment", "ok")
        metrics.count_judge_results(results)
        metrics.observe_trace_lag(3.0)
        metrics.count_evaluation(queue="tracejudge.online", status="passed", seconds=1.0)
    return (time.process_time() - started) / evaluations * 1e6


def micro(evaluations: int) -> dict[str, float]:
    out = {}
    for mode in ("in-process", "multiprocess"):
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        tmp = tempfile.mkdtemp(prefix="tj-metrics-cost-")
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = tmp
        done = subprocess.run([sys.executable, __file__, "--hooks-only", str(evaluations)], env=env, capture_output=True,
                              text=True, check=True)
        out[mode] = float(done.stdout.strip().splitlines()[-1])
    return out


def scraper(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            pass


def end_to_end(n: int, rounds: int) -> dict[str, list[float]]:
    import harness as h
    from tracejudge.testing.processes import free_port

    cpu: dict[str, list[float]] = {"off": [], "on": []}
    with ExitStack() as stack:
        services = h.start_services(stack)
        store = h.sqlite_store(services)
        warm = h.make_traces(store, 4, "warmup")
        for r in range(rounds):
            for mode in ("off", "on"):
                traces = h.make_traces(store, n, f"{mode}{r}")
                prefix = f"bench-m{mode}{r}-{uuid.uuid4().hex[:6]}:"
                env = services.worker_env(store, prefix)
                port = free_port()
                if mode == "on":
                    env["TRACEJUDGE_METRICS_PORT"] = str(port)
                worker = h.BenchWorker(env, name=f"m{mode}{r}", concurrency=16, pool="threads",
                                       log=services.base / "logs" / f"m{mode}{r}.log")
                worker.start()
                workers = h.WorkerSet([worker], prefix, services.base, "threads", 16, h.store_write_concurrency(store))
                h.use_prefix(prefix)
                h.warm_up(workers, warm)
                stop = threading.Event()
                if mode == "on":
                    threading.Thread(target=scraper, args=(port, stop), daemon=True).start()
                result = h.throughput(services, store, workers, traces)
                stop.set()
                cpu[mode].append(result["worker_cpu_ms_per_trace"])
                worker.stop()
                h.say(f"round {r + 1} metrics {mode}: worker CPU {result['worker_cpu_ms_per_trace']:.1f} ms per trace")
    return cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CPU per trace of the Prometheus metrics (see the module docstring)")
    p.add_argument("--traces", type=int, default=None, help="traces per round and mode (default 150; --quick 10)")
    p.add_argument("--rounds", type=int, default=None, help="alternating off/on rounds (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="a smoke run")
    p.add_argument("--hooks-only", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.hooks_only:
        print(hooks_per_trace(args.hooks_only))
        return 0
    before = os.getloadavg()
    hooks = micro(2000 if args.quick else 20000)
    print(f"metric hooks of one evaluation ({JUDGES} judges): {hooks['in-process']:.0f} us CPU in-process, "
          f"{hooks['multiprocess']:.0f} us with multiprocess files")
    cpu = end_to_end(args.traces or (10 if args.quick else 150), args.rounds or (1 if args.quick else 3))
    after = os.getloadavg()
    mean = {k: sum(v) / len(v) for k, v in cpu.items()}
    print(f"worker CPU per trace: metrics off {mean['off']:.1f} ms ({cpu['off']}), on {mean['on']:.1f} ms ({cpu['on']}); "
          f"difference {mean['on'] - mean['off']:+.1f} ms")
    print(f"load average before {before}, after {after}")
    print(json.dumps({"hooks_us_per_trace": hooks, "worker_cpu_ms_per_trace": cpu, "load_before": before, "load_after": after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
