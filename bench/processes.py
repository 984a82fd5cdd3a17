#!/usr/bin/env python
"""Issue 20 point 6: the default ``tracejudge worker`` (one process per core) against one process and
against ``mlflow.genai.evaluate``, on the same store, in one run.

    .venv/bin/python bench/processes.py [--traces N] [--stores sqlite,postgres] [--quick]

Reuses ``bench/harness.py``: a private redis-server, the test LLM at 200 ms in its own process, an
``mlflow server`` on a fresh PostgreSQL database for the ``postgres`` row, the same traces recipe and
the same peer script (``bench/peer.py``, in the traces' own experiment, warmed up). Rows per store:

* ``default``: ``tracejudge worker`` with no ``--processes`` (here ``bench/instrumented_worker.py worker``,
  which is ``tracejudge worker``): one supervised process per core;
* ``one``: ``--processes 1`` (what ``tracejudge worker`` was before);
* ``peer``: ``mlflow.genai.evaluate`` with as many ``make_judge`` scorers as our plan has judges.

Prints judge calls/s of each, and the ratios default/peer (target 2x) and default/one, with the load
average before and after (a figure from a loaded machine says so). Results go to
``bench/results/processes-<time>.json``. Run it on a quiet machine; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402
from _common import BENCH_DIR, machine, write_json  # noqa: E402


def start_worker(services: h.Services, store: h.Store, *, processes: int | None, label: str) -> h.WorkerSet:
    """One ``tracejudge worker`` (``processes`` None: its default), ready when every process says so."""
    from tracejudge.worker.supervisor import default_processes

    prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}:"
    phases_dir = services.base / "phases" / prefix.rstrip(":")
    phases_dir.mkdir(parents=True, exist_ok=True)
    env = services.worker_env(store, prefix, phases_dir=phases_dir)
    worker = h.BenchWorker(env, name=f"{label}-{uuid.uuid4().hex[:4]}", concurrency=16, pool="threads",
                           log=services.base / "logs" / f"{prefix.rstrip(':')}.log", processes=processes)  # type: ignore[arg-type]
    worker.start(wait=False)
    workers = h.WorkerSet([worker], prefix, phases_dir, "threads", 16, h.store_write_concurrency(store))
    services.stack.callback(workers.stop)
    expected = processes or default_processes()
    deadline = time.monotonic() + 300
    while worker.log.read_text(errors="replace").count(" ready.") < expected:
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {label} did not start {expected} processes: {worker.log.read_text()[-2000:]}")
        time.sleep(0.5)
    h.use_prefix(prefix)
    h.say(f"tracejudge worker {'(default) ' if processes is None else ''}with {expected} process(es) ready ({store.name})")
    return workers


def run_store(services: h.Services, kind: str, *, n: int) -> dict:
    store = h.postgres_store(services) if kind == "postgres" else h.sqlite_store(services)
    warm = h.make_traces(store, 8, "warmup")
    sets = {name: h.make_traces(store, n, name) for name in ("default", "one", "peer")}
    row: dict = {}
    for name, processes in (("default", None), ("one", 1)):
        workers = start_worker(services, store, processes=processes, label=f"{kind}-{name}")
        h.warm_up(workers, warm[:4] if name == "default" else warm[4:])
        row[name] = h.throughput(services, store, workers, sets[name])
        workers.stop()
    row["peer"] = h.peer(services, store, sets["peer"], warm[:2])
    calls = {k: row[k]["judge_calls_per_s"] for k in ("default", "one", "peer")}
    row["default_over_peer"] = calls["default"] / calls["peer"] if calls["peer"] else None
    row["default_over_one"] = calls["default"] / calls["one"] if calls["one"] else None
    h.say(f"{kind}: judge calls/s default {calls['default']:.0f}, one process {calls['one']:.0f}, peer {calls['peer']:.0f}; "
          f"default/peer {row['default_over_peer']:.2f}x (target 2x), default/one {row['default_over_one']:.2f}x")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=int, default=None, help="traces per row (default 200; --quick 12)")
    p.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres (default both)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few traces, sqlite only unless --stores says")
    args = p.parse_args(argv)
    n = args.traces or (12 if args.quick else 200)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if args.quick and args.stores == p.get_default("stores"):
        stores = ["sqlite"]
    results: dict = {"traces": n, "stores": stores, "machine": machine(), "load_before": os.getloadavg()}
    with ExitStack() as stack:
        services = h.start_services(stack)
        for kind in stores:
            try:
                results[kind] = run_store(services, kind, n=n)
            except h.PostgresUnavailable as exc:
                h.say(f"THE POSTGRESQL ROW IS NOT RUN: {exc}")
                results[kind] = {"skipped": str(exc)}
    results["load_after"] = os.getloadavg()
    print()
    print(f"| store | default worker ({results['machine'].get('cores', '?')} cores) | 1 process | mlflow.genai.evaluate | default/peer | default/1 |")
    print("|---|---|---|---|---|---|")
    for kind in stores:
        r = results[kind]
        if "skipped" in r:
            print(f"| {kind} | not run: {r['skipped']} | | | | |")
            continue
        print(f"| {kind} | {r['default']['judge_calls_per_s']:.0f} calls/s | {r['one']['judge_calls_per_s']:.0f} calls/s | "
              f"{r['peer']['judge_calls_per_s']:.0f} calls/s | {r['default_over_peer']:.2f}x | {r['default_over_one']:.2f}x |")
    print("\nCPU per trace (ms; the worker's processes, the peer's one) and MLflow calls per trace (the worker's):")
    for kind in stores:
        r = results[kind]
        if "skipped" not in r:
            print(f"  {kind}: default {r['default']['worker_cpu_ms_per_trace']:.0f} ms, {r['default']['store_calls_per_trace'] or 0:g} calls "
                  f"(CPU % {r['default']['cpu_percent']}); one process {r['one']['worker_cpu_ms_per_trace']:.0f} ms, "
                  f"{r['one']['store_calls_per_trace'] or 0:g} calls; peer {r['peer']['cpu_ms_per_trace']:.0f} ms")
    loads = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    print(f"\nload average before {loads(results['load_before'])}, after {loads(results['load_after'])} ({n} traces per row; "
          "a figure from a loaded machine says little)")
    out = BENCH_DIR / "results" / f"processes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, results)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
