#!/usr/bin/env python
"""The tracejudge benchmark: one command, one table.

    .venv/bin/python bench/run.py [--traces N] [--quick]

Starts everything it needs (a private redis-server, the test LLM server at
200 ms in its own process, worker processes, an ``mlflow server`` with
gunicorn workers for the HTTP rows), measures throughput, the store's write
ceiling, the peer (``mlflow.genai.evaluate``), latency, producer cost and
worker memory, prints the table and the machine, saves everything as JSON in
``bench/results/`` and stops all it started, also on failure. See
``bench/README.md`` for what each row means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, fmt, machine  # noqa: E402

import gate_latency  # noqa: E402
import harness as h  # noqa: E402

#: Issue 12's targets (1-6), and the earlier issue's producer/memory targets kept as they were.
TARGETS = {
    "peer_ratio": 2.0,  # 1: judge calls/s, ours / mlflow.genai.evaluate, same store
    "calls_extra": 2,  # 2: MLflow calls per trace <= judges + 2 ...
    "calls_extra_minimal": 1,  # ... and judges + 1 with artifact_level: minimal
    "cpu_ms_per_trace": 50.0,  # 3: worker CPU per trace (6 judges)
    "ceiling_fraction": 0.60,  # 4: feedback writes/s / the server's raw log_feedback ceiling (PostgreSQL)
    "scaling": 1.7,  # 5: 2 worker processes / 1 where the store is not the limit
    "single_p50_ms": 60.0,  # 6: overhead beyond the LLM's latency, one idle trace, p50
    "enqueue_p99_us": 1500.0,
    "nonblocking_p99_us": 50.0,
    "rss_mb": 300.0,
}
STORES = ("sqlite", "http", "postgres")
STORE_TITLES = {"sqlite": "sqlite file", "http": "mlflow server on sqlite", "postgres": "mlflow server on PostgreSQL"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="tracejudge benchmark (see bench/README.md)")
    p.add_argument("--traces", type=int, default=None, help="traces per throughput run (default 200; --quick: 40)")
    p.add_argument("--quick", action="store_true", help="a smoke run: fewer traces, no peer / 2-process row on server stores")
    p.add_argument("--stores", default="sqlite,postgres",
                   help="comma-separated, in order: sqlite (a local file), http (mlflow server on sqlite), postgres "
                        "(mlflow server on a fresh PostgreSQL database; default sqlite,postgres)")
    p.add_argument("--pool", default="threads", help="worker pool (default threads)")
    p.add_argument("--concurrency", type=int, default=16, help="worker concurrency (default 16)")
    p.add_argument("--write-concurrency", type=int, default=None,
                   help="TRACEJUDGE_WRITE_CONCURRENCY (default: unset, the package's default for the store: 2 on sqlite, 8 on a server)")
    p.add_argument("--mlflow-workers", type=int, default=4, help="gunicorn workers of the mlflow server (default 4)")
    p.add_argument("--skip-http", action="store_true", help="no mlflow server rows (same as --stores sqlite)")
    p.add_argument("--no-producer", action="store_true", help="skip the producer-cost rows (enqueue timings)")
    p.add_argument("--no-profile", action="store_true", help="do not sample the 1-process workers with py-spy")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where to write results JSON and the table")
    args = p.parse_args(argv)
    args.stores = [x.strip() for x in args.stores.split(",") if x.strip()]
    if args.skip_http:
        args.stores = [x for x in args.stores if x == "sqlite"]
    unknown = [x for x in args.stores if x not in STORES]
    if unknown:
        p.error(f"--stores: unknown {unknown}; known: {', '.join(STORES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    n = args.traces or (40 if quick else 200)
    single_n = 8 if quick else 20
    load_seconds = 6 if quick else 15
    ceiling_calls = 300 if quick else 800
    results: dict = {"config": {"traces": n, "quick": quick, "pool": args.pool, "concurrency": args.concurrency,
                                "write_concurrency": args.write_concurrency, "mlflow_workers": args.mlflow_workers,
                                "judges_per_trace": h.JUDGES_PER_TRACE, "llm_latency_ms": h.LLM_LATENCY_S * 1000,
                                "stores": args.stores, "command": " ".join(["bench/run.py", *(argv or sys.argv[1:])])},
                     "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    started = time.perf_counter()
    worker_opts = dict(pool=args.pool, concurrency=args.concurrency, write_concurrency=args.write_concurrency)
    status = 0
    profile = not args.no_profile and _have_py_spy()
    results["config"]["py_spy"] = profile
    with ExitStack() as stack:
        try:
            services = h.start_services(stack)
            results["workdir"] = str(services.base)
            for kind in args.stores:
                try:
                    run_store(results, services, kind, n=n, single_n=single_n,
                              load_seconds=load_seconds if kind == "sqlite" else 0, ceiling_calls=ceiling_calls,
                              quick=quick, worker_opts=worker_opts, mlflow_workers=args.mlflow_workers, profile=profile)
                except h.PostgresUnavailable as exc:
                    h.say(f"THE POSTGRESQL ROW IS NOT RUN: {exc}")
                    results.setdefault(kind, {})["skipped"] = str(exc)
                if kind == "sqlite" and not args.no_producer:
                    h.say("producer cost")
                    sqlite = services.stores["sqlite"]
                    results["producer"] = h.producer_cost(services, sqlite, calls=1000 if quick else 2000,
                                                          sleep_calls=60 if quick else 200, workflows=10 if quick else 60)
                    if not quick:
                        results["producer_redis_no_aof"] = h.redis_enqueue_without_fsync(services, sqlite, calls=2000)
            # target 9 (its own private stack: bench/gate_latency.py)
            results["gate_latency"] = gate_latency.measure(samples=10 if quick else 30, baseline_samples=3 if quick else 8,
                                                           latency_ms=h.LLM_LATENCY_S * 1000, log=h.say)
        except Exception:
            traceback.print_exc()
            status = 1
            results["error"] = traceback.format_exc()
        finally:
            h.say("stopping everything this run started")
    results["seconds"] = time.perf_counter() - started
    table = render(results)
    print()
    print(table)
    save(results, table, args.out)
    return status


def _have_py_spy() -> bool:
    import shutil

    return bool(shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists())


def run_store(results: dict, services: h.Services, kind: str, *, n: int, single_n: int, load_seconds: float,
              ceiling_calls: int, quick: bool, worker_opts: dict, profile: bool = False, mlflow_workers: int = 4) -> None:
    h.say(f"--- {kind} store ---")
    if kind == "sqlite":
        store = h.sqlite_store(services)
    elif kind == "postgres":
        store = h.postgres_store(services, workers=mlflow_workers)
    else:
        store = h.http_store(services, workers=mlflow_workers)
    r = results.setdefault(kind, {})
    if kind != "sqlite":
        r["mlflow_workers"] = mlflow_workers
    writers = worker_opts["write_concurrency"] or h.store_write_concurrency(store)  # the ceiling's threads: our write concurrency
    r["write_concurrency"] = writers
    ceiling_traces = h.make_traces(store, 6, "ceiling")
    warm = h.make_traces(store, 12, "warmup")
    ours1 = h.make_traces(store, n, "ours1")
    ours2 = h.make_traces(store, n, "ours2") if not (quick and kind == "http") else []
    single = h.make_traces(store, single_n, "single")
    minimal = h.make_traces(store, 20 if not quick else 8, "minimal") if kind == "sqlite" else []
    peer_set = h.make_traces(store, n, "peer") if (kind == "sqlite" or not quick) else []

    h.say("the store's write ceiling (raw log_feedback)")
    r["ceiling_1"] = h.ceiling(store, ceiling_traces, processes=1, threads=writers, calls=ceiling_calls)
    r["ceiling_2"] = h.ceiling(store, ceiling_traces, processes=2, threads=writers, calls=ceiling_calls // 2)
    if kind != "sqlite":  # the same writes through our REST writer: its CPU per call, and the server's own ceiling
        for procs in (1, 2):
            r[f"ceiling_rest_{procs}"] = h.ceiling(store, ceiling_traces, processes=procs, threads=writers,
                                                   calls=ceiling_calls // procs, writer="rest")

    h.say("throughput, 1 worker process")
    workers = h.start_workers(services, store, processes=1, label=f"{kind}1", **worker_opts)
    r["rss_1_started"] = workers.rss()
    h.warm_up(workers, warm[:4])
    profile_out = services.base / f"pyspy-{kind}-1.txt" if profile else None
    r["throughput_1"] = h.throughput(services, store, workers, ours1, profile_seconds=(4 if quick else 15) if profile else 0,
                                     profile_out=profile_out)
    if profile_out is not None:
        from profile_worker import summarize

        r["profile_1"] = summarize(profile_out)
        h.say(f"  py-spy: {r['profile_1']}")
    if single:
        h.say("latency: one trace at a time on the idle worker")
        r["latency_single"] = h.latency_single(workers, single)
    if single and load_seconds:
        rate = max(1.0, 0.5 * r["throughput_1"]["traces_per_s"])
        load = h.make_traces(store, int(rate * load_seconds), "load")
        h.say(f"latency under load: {rate:.1f} traces/s for {load_seconds} s (half the measured throughput)")
        r["latency_load"] = h.latency_under_load(workers, load, rate=rate)
    r["rss_1"] = workers.rss()
    workers.stop()

    if ours2:
        h.say("throughput, 2 worker processes")
        workers = h.start_workers(services, store, processes=2, label=f"{kind}2", **worker_opts)
        h.warm_up(workers, warm[4:8])
        r["throughput_2"] = h.throughput(services, store, workers, ours2)
        r["rss_2"] = workers.rss()
        workers.stop()

    if minimal:
        # Target 2's second half: MLflow calls per trace with artifact_level: minimal (no report, no run metrics).
        h.say("MLflow calls per trace with artifact_level: minimal")
        workers = h.start_workers(services, store, processes=1, label=f"{kind}min", config_yaml=h.minimal_config(),
                                  **worker_opts)
        h.warm_up(workers, warm[8:10])
        r["throughput_minimal"] = h.throughput(services, store, workers, minimal)
        workers.stop()

    if kind == "sqlite":
        # Scaling where the store is not the limit: the same work with MLflow writes taken out
        # (bench-only what-if "nowrites"; traces are still read). Nothing is written, so one
        # trace set serves both runs (each run has its own Redis key prefix, so no cached results).
        scale = h.make_traces(store, n + 4, "scale")
        for procs in (1, 2):
            h.say(f"scaling check: {procs} worker process(es) with MLflow writes taken out")
            workers = h.start_workers(services, store, processes=procs, label=f"{kind}nw{procs}", whatif="nowrites",
                                      **worker_opts)
            h.warm_up(workers, scale[:4])
            r[f"nowrites_{procs}"] = h.throughput(services, store, workers, scale[4:])
            workers.stop()

    # The machine may be shared: measure the ceiling again after the runs and keep the better
    # of the two (the store's capacity), both are kept in the JSON.
    h.say("the store's write ceiling again (the better of the two measurements is used)")
    for procs in (1, 2):
        again = h.ceiling(store, ceiling_traces, processes=procs, threads=writers,
                          calls=ceiling_calls // procs)
        first = r[f"ceiling_{procs}"]
        r[f"ceiling_{procs}_measurements"] = [first["calls_per_s"], again["calls_per_s"]]
        if again["calls_per_s"] > first["calls_per_s"]:
            again["measurements"] = r[f"ceiling_{procs}_measurements"]
            r[f"ceiling_{procs}"] = again

    if peer_set:
        h.say("the peer: mlflow.genai.evaluate with make_judge scorers")
        r["peer"] = h.peer(services, store, peer_set, warm[:2])


# ----------------------------------------------------------------------------- the table


def _ok(value: float | None, target: float, *, at_most: bool = False) -> str:
    if value is None:
        return "n/a"
    return "yes" if (value <= target if at_most else value >= target) else "**no**"


def best_ceiling(r: dict, procs: int) -> float | None:
    """The store's raw log_feedback ceiling: the best measured, through MLflow's client or our REST writer."""
    found = [r[k]["calls_per_s"] for k in (f"ceiling_{procs}", f"ceiling_rest_{procs}") if r.get(k)]
    return max(found) if found else None


def render(results: dict) -> str:
    lines: list[str] = []
    add = lines.append
    cfg = results["config"]
    judges = cfg["judges_per_trace"]
    stores = [k for k in cfg.get("stores", ["sqlite", "http"]) if k in results]
    cols = {k: results[k] for k in stores}
    writers = cfg["write_concurrency"] or "the store's default (" + ", ".join(
        f"{cols[k].get('write_concurrency', '?')} on {k}" for k in stores) + ")"
    add(f"tracejudge benchmark, {results['started']}: {cfg['traces']} traces per run, {judges} judges per trace "
        f"(3 on each of 2 nodes), test LLM at {cfg['llm_latency_ms']:.0f} ms; workers --pool {cfg['pool']} "
        f"-c {cfg['concurrency']}, write concurrency {writers}; mlflow server gunicorn --workers "
        f"{cfg['mlflow_workers']}{' (QUICK RUN)' if cfg['quick'] else ''}")
    if cfg.get("command"):
        add(f"Command: `.venv/bin/python {cfg['command']}`")
    for k in stores:
        if cols[k].get("skipped"):
            add(f"**{STORE_TITLES[k]}: not run.** {cols[k]['skipped']}")
    add("")

    def tp(r: dict, key: str) -> str:
        t = r.get(key)
        if not t:
            return "n/a"
        bad = f", {t['judge_errors']} judge errors" if t.get("judge_errors") else ""
        bad += f", {len(t['failures'])} failed" if t.get("failures") else ""
        return f"{t['traces_per_s']:.1f} traces/s = {t['judge_calls_per_s']:.0f} judge calls/s{bad}"

    def scaling(r: dict) -> float | None:
        if r.get("throughput_1") and r.get("throughput_2"):
            return r["throughput_2"]["traces_per_s"] / r["throughput_1"]["traces_per_s"]
        return None

    def store_limited(r: dict) -> bool:
        t2, c2 = r.get("throughput_2"), r.get("ceiling_2")
        return bool(t2 and c2 and t2["store_calls_per_s"] >= 0.7 * c2["calls_per_s"])

    def peer_ratio(r: dict) -> float | None:
        p = r.get("peer")
        best = max([r[k]["judge_calls_per_s"] for k in ("throughput_1", "throughput_2") if r.get(k)], default=None)
        return best / p["judge_calls_per_s"] if (p and best) else None

    def calls(r: dict, key: str = "throughput_1") -> float | None:
        t = r.get(key)
        return t["store_calls_per_trace"] if t and t.get("store_calls_per_trace") is not None else None

    def cpu(r: dict) -> float | None:
        t = r.get("throughput_1")
        return t.get("worker_cpu_ms_per_trace") if t else None

    def ceiling_fraction(r: dict, procs: int) -> float | None:
        t, c = r.get(f"throughput_{procs}"), best_ceiling(r, procs)
        return t["feedback_writes_per_s"] / c if (t and c) else None

    def all_met(values: list[float | None], target: float, *, at_most: bool = False) -> str:
        got = [v for v in values if v is not None]
        if not got:
            return "n/a"
        return "yes" if all((v <= target if at_most else v >= target) for v in got) else "**no**"

    # ---- the targets, each a ratio or figure from this run
    add("Targets (issue 12), each from this one run:")
    add("")
    add("| # | target | " + " | ".join(STORE_TITLES[k] for k in stores) + " | met |")
    add("|---|---|" + "---|" * len(stores) + "---|")
    ratios = {k: peer_ratio(cols[k]) for k in stores}
    add(f"| 1 | judge calls/s, ours (best of 1 or 2 processes) / `mlflow.genai.evaluate` at its best, >= {TARGETS['peer_ratio']:g}x | "
        + " | ".join(fmt(ratios[k], 2, "x") for k in stores) + f" | {all_met(list(ratios.values()), TARGETS['peer_ratio'])} |")
    per_trace = {k: calls(cols[k]) for k in stores}
    add(f"| 2 | MLflow calls per trace (incl. the one `get_trace`), <= judges + {TARGETS['calls_extra']} = "
        f"{judges + TARGETS['calls_extra']} | " + " | ".join(
            (f"{v:.1f} (judges + {v - judges:.1f})" if v is not None else "n/a") for v in per_trace.values())
        + f" | {all_met(list(per_trace.values()), judges + TARGETS['calls_extra'] + 0.05, at_most=True)} |")
    mins = {k: calls(cols[k], "throughput_minimal") for k in stores}
    if any(v is not None for v in mins.values()):
        add(f"| 2 | ... with `artifact_level: minimal`, <= judges + {TARGETS['calls_extra_minimal']} = "
            f"{judges + TARGETS['calls_extra_minimal']} | " + " | ".join(
                (f"{v:.1f} (judges + {v - judges:.1f})" if v is not None else "n/a") for v in mins.values())
            + f" | {all_met(list(mins.values()), judges + TARGETS['calls_extra_minimal'] + 0.05, at_most=True)} |")
    cpus = {k: cpu(cols[k]) for k in stores}
    add(f"| 3 | worker CPU per trace ({judges} judges), 1 process under load, <= {TARGETS['cpu_ms_per_trace']:g} ms | "
        + " | ".join(fmt(v, 0, " ms") for v in cpus.values())
        + f" | {all_met(list(cpus.values()), TARGETS['cpu_ms_per_trace'], at_most=True)} |")
    for procs in (1, 2):
        fr = {k: ceiling_fraction(cols[k], procs) for k in stores}
        pg = fr.get("postgres")
        add(f"| 4 | feedback writes/s / the store's raw `log_feedback` ceiling, {procs} worker process{'es' if procs > 1 else ''}, "
            f">= {TARGETS['ceiling_fraction']:.0%} on PostgreSQL | " + " | ".join(fmt(v and v * 100, 0, " %") for v in fr.values())
            + f" | {_ok(pg, TARGETS['ceiling_fraction']) if 'postgres' in fr else 'n/a (no PostgreSQL row)'} |")
    sc = {k: scaling(cols[k]) for k in stores}
    nw1, nw2 = cols.get("sqlite", {}).get("nowrites_1"), cols.get("sqlite", {}).get("nowrites_2")
    nw = nw2["traces_per_s"] / nw1["traces_per_s"] if (nw1 and nw2) else None
    notes = [f"{k}: store-bound" for k in stores if sc[k] is not None and store_limited(cols[k])]
    free = [v for k, v in sc.items() if v is not None and not store_limited(cols[k])] + ([nw] if nw else [])
    add(f"| 5 | 2 worker processes / 1, where the store is not the limit, >= {TARGETS['scaling']:g}x | "
        + " | ".join(fmt(v, 2, "x") + (" (store-bound)" if v is not None and store_limited(cols[k]) else "")
                     for k, v in sc.items())
        + f" | {all_met(free, TARGETS['scaling'])}{'; ' + '; '.join(notes) if notes else ''} |")
    if nw is not None:
        add(f"| 5 | ... the same with MLflow writes taken out (what-if `nowrites`: the store is not the limit) | "
            + " | ".join((f"{nw:.2f}x ({nw1['traces_per_s']:.1f} -> {nw2['traces_per_s']:.1f} traces/s)" if k == "sqlite" else "")
                         for k in stores) + f" | {_ok(nw, TARGETS['scaling'])} |")
    lat = {k: cols[k].get("latency_single") for k in stores}
    add(f"| 6 | overhead beyond the LLM's {cfg['llm_latency_ms']:.0f} ms, one trace on an idle worker, p50 <= "
        f"{TARGETS['single_p50_ms']:g} ms | " + " | ".join(
            (f"p50 {fmt(v['overhead_p50_ms'], 0, ' ms')}, p95 {fmt(v['overhead_p95_ms'], 0, ' ms')}" if v else "n/a")
            for v in lat.values())
        + f" | {all_met([v and v['overhead_p50_ms'] for v in lat.values()], TARGETS['single_p50_ms'], at_most=True)} |")

    # ---- the figures behind them
    add("")
    add("The figures:")
    add("")
    add("| measurement | " + " | ".join(STORE_TITLES[k] for k in stores) + " |")
    add("|---|" + "---|" * len(stores))

    def row(label: str, fn: Any) -> None:
        add(f"| {label} | " + " | ".join(fn(cols[k]) for k in stores) + " |")

    row("throughput, 1 worker process (enqueue to verdict)", lambda r: tp(r, "throughput_1"))
    row("throughput, 2 worker processes", lambda r: tp(r, "throughput_2"))
    row("throughput, 1 process, artifact_level: minimal", lambda r: tp(r, "throughput_minimal") if r.get("throughput_minimal") else "")

    def ceil(r: dict, key: str) -> str:
        c = r.get(key)
        if not c:
            return "n/a"
        both = r.get(f"{key}_measurements")
        runs = f"; measured {' and '.join(f'{x:.0f}' for x in both)}/s" if both else ""
        return (f"{c['calls_per_s']:.0f}/s ({c['processes']}x{c['threads']} threads, p50 {c['p50_ms']:.1f} ms, "
                f"{c.get('client_cpu_ms_per_call', 0):.1f} ms CPU/call in the caller{runs})")

    row("ceiling: raw log_feedback, 1 process", lambda r: ceil(r, "ceiling_1"))
    row("ceiling: raw log_feedback, 2 processes", lambda r: ceil(r, "ceiling_2"))
    for procs in (1, 2):
        row(f"the same writes through tracejudge's REST writer, {procs} process{'es' if procs > 1 else ''} (8 in flight on one loop each)",
            lambda r, p=procs: ceil(r, f"ceiling_rest_{p}") if r.get(f"ceiling_rest_{p}") else "")

    def frac(r: dict, procs: int) -> str:
        t, c = r.get(f"throughput_{procs}"), best_ceiling(r, procs)
        if not (t and c):
            return "n/a"
        return (f"{t['feedback_writes_per_s']:.0f} feedback/s = {t['feedback_writes_per_s'] / c:.0%} of the best ceiling ({c:.0f}/s); "
                f"all store calls {t['store_calls_per_s']:.0f}/s ({t['store_calls_per_trace']:.1f} per trace)")

    row("write-back rate / ceiling, 1 process", lambda r: frac(r, 1))
    row("write-back rate / ceiling, 2 processes", lambda r: frac(r, 2))

    def peer(r: dict) -> str:
        p = r.get("peer")
        if not p:
            return "n/a"
        cpu_ = f"; {p['cpu_ms_per_trace']:.0f} ms CPU per trace in its process" if p.get("cpu_ms_per_trace") else ""
        return (f"{p['judge_calls_per_s']:.1f} judge calls/s ({p['traces']} traces x {p['scorers']} make_judge in "
                f"{p['wall']:.1f} s; {p['feedback_written']} written, {p['feedback_errors']} errors{cpu_})")

    row("peer: mlflow.genai.evaluate", peer)
    ll = cols.get("sqlite", {}).get("latency_load")
    if ll:
        row(f"latency over {cfg['llm_latency_ms']:.0f} ms under load ({fmt(ll['rate'], 1)} traces/s)",
            lambda r: f"p50 {fmt(r['latency_load']['overhead_p50_ms'], 0, ' ms')}, p95 {fmt(r['latency_load']['overhead_p95_ms'], 0, ' ms')}"
            if r.get("latency_load") else "")
    p = results.get("producer")
    if p:
        b, nb = p["blocking"], p["non_blocking"]
        add(f"| enqueue(), blocking, in the caller (target p99 <= 1.5 ms: {_ok(b['p99_us'], TARGETS['enqueue_p99_us'], at_most=True)}) | "
            f"p50 {b['p50_us']:.0f} us, p99 {b['p99_us']:.0f} us |" + " |" * (len(stores) - 1))
        add(f"| enqueue(block=False), in the caller (target p99 <= 50 us: {_ok(nb['p99_us'], TARGETS['nonblocking_p99_us'], at_most=True)}) | "
            f"p50 {nb['p50_us']:.1f} us, p99 {nb['p99_us']:.1f} us (delivered {p['delivered']}/{p['enqueued']}) |" + " |" * (len(stores) - 1))
        if p.get("non_blocking_gc_off"):
            g = p["non_blocking_gc_off"]
            add(f"| enqueue(block=False), garbage collector off | p50 {g['p50_us']:.1f} us, p99 {g['p99_us']:.1f} us |" + " |" * (len(stores) - 1))
        wf = p["workflow_ms"]
        add(f"| workflow wall time, p50 (mean): alone / + enqueue() / + enqueue(block=False) | "
            f"{wf['none']['p50']:.1f} ({wf['none']['mean']:.1f}) / {wf['blocking']['p50']:.1f} ({wf['blocking']['mean']:.1f}) / "
            f"{wf['non_blocking']['p50']:.1f} ({wf['non_blocking']['mean']:.1f}) ms |" + " |" * (len(stores) - 1))
    nf = results.get("producer_redis_no_aof")
    if nf:
        add(f"| enqueue(), blocking, Redis without appendfsync always | p50 {nf['blocking']['p50_us']:.0f} us, "
            f"p99 {nf['blocking']['p99_us']:.0f} us |" + " |" * (len(stores) - 1))

    def rss(r: dict) -> str:
        parts = []
        for key, label in (("rss_1", "1 proc"), ("rss_2", "2 procs")):
            if r.get(key):
                parts.append(f"{label}: max {max(r[key].values()):.0f} MB")
        return "; ".join(parts) or "n/a"

    row("worker RSS after the run (per process; earlier target <= 300 MB)", rss)

    # ---- where the time goes
    add("")
    add("Where a trace's time goes in the worker (p50 ms per trace; from timers around each step):")
    add("")
    phase_cols = [(f"single trace, idle ({k})", (cols[k].get("latency_single") or {}).get("phases", {}))
                  for k in stores if cols[k].get("latency_single")]
    phase_cols += [(f"under load, 1 process ({k})", (cols[k].get("throughput_1") or {}).get("phases", {})) for k in stores]
    add("| step | " + " | ".join(t for t, _ in phase_cols) + " |")
    add("|---|" + "---|" * len(phase_cols))
    steps = ["queue_wait", "task", "evaluate", "get_trace", "lock", "redis_cache", "judges", "judges_minus_llm_latency",
             "write_back", "write_feedback", "write_summary", "summary_tags", "summary_report", "evaluate_other",
             "celery_and_task_wrapper"]
    steps += sorted({s for _, c in phase_cols for s in c} - set(steps) - {"lock_held"})
    for step in steps:
        if any(step in c for _, c in phase_cols):
            add(f"| {step} | " + " | ".join(fmt(c.get(step, {}).get("p50_ms"), 1) for _, c in phase_cols) + " |")
    add("")
    add("CPU use during the throughput runs (% of one core; the machine has "
        f"{results['machine']['cores']} cores = {results['machine']['cores'] * 100} %):")
    for k in stores:
        r = cols[k]
        for key, label in (("throughput_1", ""), ("throughput_2", ", 2 processes"), ("throughput_minimal", ", minimal")):
            t = r.get(key)
            if t:
                per = f" = {t['worker_cpu_ms_per_trace']:.0f} ms of worker CPU per trace" if t.get("worker_cpu_ms_per_trace") else ""
                if t.get("server_cpu_ms_per_trace"):
                    per += f" + {t['server_cpu_ms_per_trace']:.0f} ms in the mlflow server"
                add(f"- {k}{label}: " + ", ".join(f"{n_} {v:.0f} %" for n_, v in t["cpu_percent"].items()) + per)
    for k in stores:
        r = cols[k]
        if r.get("rss_1_started"):
            add(f"- worker RSS ({k}) right after start: {max(r['rss_1_started'].values()):.0f} MB; after the run: "
                f"{max((r.get('rss_1') or {0: 0}).values()):.0f} MB")
    for k in stores:
        for key, label in (("throughput_1", ""), ("throughput_minimal", ", artifact_level minimal")):
            t = cols[k].get(key)
            if t and t.get("ops"):
                add(f"- MLflow calls per trace ({k}{label}, mean ms each): " + ", ".join(
                    f"{n_} {v['count'] / t['traces']:.1f} x {fmt(v['mean_ms'], 1)}" for n_, v in sorted(t["ops"].items())))
    for k in stores:
        prof = cols[k].get("profile_1")
        if prof and prof.get("samples"):
            add(f"- py-spy, 1-process {k} worker under load ({prof['samples']} CPU samples), by step: "
                + ", ".join(f"{n_} {v} %" for n_, v in prof["steps"].items()))
            add("  by library: " + ", ".join(f"{n_} {v} %" for n_, v in prof["libraries"].items()))
    if results.get("gate_latency"):
        add("- " + gate_latency.describe(results["gate_latency"]))
    m = results["machine"]
    add("")
    add(f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
    if m.get("postgres"):
        add(f"PostgreSQL: {m['postgres']}")
    if m.get("load_average"):
        add(f"Load average at the start: {m['load_average']}")
    add(f"Run time: {results.get('seconds', 0):.0f} s. Working directory (logs, stores): {results.get('workdir')}")
    if results.get("error"):
        add("")
        add("THE RUN FAILED: " + results["error"].strip().splitlines()[-1])
    return "\n".join(lines)


def save(results: dict, table: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = "-quick" if results["config"]["quick"] else ""
    (out / f"run-{stamp}{suffix}.json").write_text(json.dumps(results, indent=2, default=str))
    (out / f"run-{stamp}{suffix}.md").write_text(table + "\n")
    (out / f"latest{suffix}.md").write_text(table + "\n")
    (out / f"latest{suffix}.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nsaved: {out / f'run-{stamp}{suffix}.json'}")


if __name__ == "__main__":
    sys.exit(main())
