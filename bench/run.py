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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, fmt, machine  # noqa: E402

import gate_latency  # noqa: E402
import harness as h  # noqa: E402

TARGETS = {
    "writeback_fraction": 0.80,
    "peer_ratio": 5.0,
    "scaling": 1.7,
    "single_p50_ms": 30.0,
    "enqueue_p99_us": 1500.0,
    "nonblocking_p99_us": 50.0,
    "rss_mb": 300.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="tracejudge benchmark (see bench/README.md)")
    p.add_argument("--traces", type=int, default=None, help="traces per throughput run (default 200; --quick: 40)")
    p.add_argument("--quick", action="store_true", help="a ~2-minute smoke run: fewer traces, no HTTP peer, no 2-process HTTP row")
    p.add_argument("--pool", default="threads", help="worker pool (default threads)")
    p.add_argument("--concurrency", type=int, default=16, help="worker concurrency (default 16)")
    p.add_argument("--write-concurrency", type=int, default=8, help="TRACEJUDGE_WRITE_CONCURRENCY (default 8)")
    p.add_argument("--mlflow-workers", type=int, default=4, help="gunicorn workers of the mlflow server (default 4)")
    p.add_argument("--skip-http", action="store_true", help="no mlflow server rows")
    p.add_argument("--no-profile", action="store_true", help="do not sample the 1-process workers with py-spy")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where to write results JSON and the table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    n = args.traces or (40 if quick else 200)
    single_n = 8 if quick else 20
    load_seconds = 6 if quick else 15
    ceiling_calls = 300 if quick else 800
    results: dict = {"config": {"traces": n, "quick": quick, "pool": args.pool, "concurrency": args.concurrency,
                                "write_concurrency": args.write_concurrency, "mlflow_workers": args.mlflow_workers,
                                "judges_per_trace": h.JUDGES_PER_TRACE, "llm_latency_ms": h.LLM_LATENCY_S * 1000},
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
            run_store(results, services, "sqlite", n=n, single_n=single_n, load_seconds=load_seconds,
                      ceiling_calls=ceiling_calls, quick=quick, worker_opts=worker_opts, profile=profile)
            h.say("producer cost")
            sqlite = services.stores["sqlite"]
            results["producer"] = h.producer_cost(services, sqlite, calls=1000 if quick else 2000,
                                                  sleep_calls=60 if quick else 200, workflows=10 if quick else 60)
            if not quick:
                results["producer_redis_no_aof"] = h.redis_enqueue_without_fsync(services, sqlite, calls=2000)
            if not args.skip_http:
                run_store(results, services, "http", n=n, single_n=0, load_seconds=0, ceiling_calls=ceiling_calls,
                          quick=quick, worker_opts=worker_opts, mlflow_workers=args.mlflow_workers, profile=profile)
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
    store = h.sqlite_store(services) if kind == "sqlite" else h.http_store(services, workers=mlflow_workers)
    r = results.setdefault(kind, {})
    if kind == "http":
        r["mlflow_workers"] = mlflow_workers
    ceiling_traces = h.make_traces(store, 6, "ceiling")
    warm = h.make_traces(store, 8, "warmup")
    ours1 = h.make_traces(store, n, "ours1")
    ours2 = h.make_traces(store, n, "ours2") if not (quick and kind == "http") else []
    single = h.make_traces(store, single_n, "single")
    peer_set = h.make_traces(store, n, "peer") if (kind == "sqlite" or not quick) else []

    h.say("the store's write ceiling (raw log_feedback)")
    r["ceiling_1"] = h.ceiling(store, ceiling_traces, processes=1, threads=worker_opts["write_concurrency"], calls=ceiling_calls)
    r["ceiling_2"] = h.ceiling(store, ceiling_traces, processes=2, threads=worker_opts["write_concurrency"], calls=ceiling_calls // 2)

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
        again = h.ceiling(store, ceiling_traces, processes=procs, threads=worker_opts["write_concurrency"],
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


def render(results: dict) -> str:
    lines: list[str] = []
    add = lines.append
    cfg = results["config"]
    add(f"tracejudge benchmark, {results['started']}: {cfg['traces']} traces per run, {cfg['judges_per_trace']} judges per trace "
        f"(3 on each of 2 nodes), test LLM at {cfg['llm_latency_ms']:.0f} ms; workers --pool {cfg['pool']} "
        f"-c {cfg['concurrency']}, write concurrency {cfg['write_concurrency']}; mlflow server gunicorn --workers "
        f"{cfg['mlflow_workers']}{' (QUICK RUN)' if cfg['quick'] else ''}")
    add("")
    add("| measurement | sqlite store | mlflow server (HTTP) | target | met |")
    add("|---|---|---|---|---|")
    s, w = results.get("sqlite", {}), results.get("http", {})

    def tp(r: dict, key: str) -> str:
        t = r.get(key)
        if not t:
            return "n/a"
        bad = f", {t['judge_errors']} judge errors" if t.get("judge_errors") else ""
        bad += f", {len(t['failures'])} failed" if t.get("failures") else ""
        return f"{t['traces_per_s']:.1f} traces/s = {t['judge_calls_per_s']:.0f} judge calls/s{bad}"

    add(f"| throughput, 1 worker process (enqueue to verdict) | {tp(s, 'throughput_1')} | {tp(w, 'throughput_1')} | | |")
    add(f"| throughput, 2 worker processes | {tp(s, 'throughput_2')} | {tp(w, 'throughput_2')} | | |")

    def scaling(r: dict) -> float | None:
        if r.get("throughput_1") and r.get("throughput_2"):
            return r["throughput_2"]["traces_per_s"] / r["throughput_1"]["traces_per_s"]
        return None

    def store_limited(r: dict) -> bool:
        t2, c2 = r.get("throughput_2"), r.get("ceiling_2")
        return bool(t2 and c2 and t2["store_calls_per_s"] >= 0.7 * c2["calls_per_s"])

    sc_s, sc_w = scaling(s), scaling(w)
    note = []
    for name, r, sc in (("sqlite", s, sc_s), ("http", w, sc_w)):
        if sc is not None and store_limited(r):
            note.append(f"{name}: store-bound")
    add(f"| 2 processes / 1 process | {fmt(sc_s, 2, 'x')} | {fmt(sc_w, 2, 'x')} | >= 1.7x where the store is not the limit | "
        f"{'; '.join(note) or (_ok(max(x for x in (sc_s, sc_w) if x is not None), TARGETS['scaling']) if (sc_s or sc_w) else 'n/a')} |")

    nw1, nw2 = s.get("nowrites_1"), s.get("nowrites_2")
    if nw1 and nw2:
        nw = nw2["traces_per_s"] / nw1["traces_per_s"]
        add(f"| 2 processes / 1 process with MLflow writes taken out (the store not the limit; what-if) | "
            f"{nw:.2f}x ({nw1['traces_per_s']:.1f} -> {nw2['traces_per_s']:.1f} traces/s; CPU "
            f"{sum(v for k, v in nw2['cpu_percent'].items() if k.startswith('worker')):.0f} % of 200 %) | | >= 1.7x | "
            f"{_ok(nw, TARGETS['scaling'])} |")

    def ceil(r: dict, key: str) -> str:
        c = r.get(key)
        if not c:
            return "n/a"
        both = r.get(f"{key}_measurements")
        runs = f"; measured {' and '.join(f'{x:.0f}' for x in both)}/s" if both else ""
        return (f"{c['calls_per_s']:.0f}/s ({c['processes']}x{c['threads']} threads, p50 {c['p50_ms']:.1f} ms, "
                f"{c.get('client_cpu_ms_per_call', 0):.1f} ms CPU/call in the caller{runs})")

    add(f"| ceiling: raw log_feedback, 1 process | {ceil(s, 'ceiling_1')} | {ceil(w, 'ceiling_1')} | | |")
    add(f"| ceiling: raw log_feedback, 2 processes | {ceil(s, 'ceiling_2')} | {ceil(w, 'ceiling_2')} | | |")

    def frac(r: dict, procs: int) -> tuple[str, float | None]:
        t, c = r.get(f"throughput_{procs}"), r.get(f"ceiling_{procs}")
        if not (t and c):
            return "n/a", None
        f1 = t["feedback_writes_per_s"] / c["calls_per_s"]
        f2 = t["store_calls_per_s"] / c["calls_per_s"]
        return (f"{t['feedback_writes_per_s']:.0f} feedback/s = {f1:.0%} of ceiling; all store calls "
                f"{t['store_calls_per_s']:.0f}/s = {f2:.0%} ({t['store_calls_per_trace']:.1f} per trace)"), f1

    for procs in (1, 2):
        fs, vs = frac(s, procs)
        fw, vw = frac(w, procs)
        best = max([v for v in (vs, vw) if v is not None], default=None)
        add(f"| write-back rate / ceiling, {procs} process{'es' if procs > 1 else ''} | {fs} | {fw} | >= 80% | "
            f"{_ok(best, TARGETS['writeback_fraction'])} |")

    def peer(r: dict) -> str:
        p = r.get("peer")
        if not p:
            return "n/a"
        cpu = f"; {p['cpu_ms_per_trace']:.0f} ms CPU per trace in its process" if p.get("cpu_ms_per_trace") else ""
        return (f"{p['judge_calls_per_s']:.1f} judge calls/s ({p['traces']} traces x {p['scorers']} make_judge in "
                f"{p['wall']:.1f} s; {p['feedback_written']} written, {p['feedback_errors']} errors{cpu})")

    add(f"| peer: mlflow.genai.evaluate | {peer(s)} | {peer(w)} | | |")

    def ratio(r: dict) -> float | None:
        p = r.get("peer")
        best = max([r[k]["judge_calls_per_s"] for k in ("throughput_1", "throughput_2") if r.get(k)], default=None)
        return best / p["judge_calls_per_s"] if (p and best) else None

    rs, rw = ratio(s), ratio(w)
    add(f"| ours / peer (best of 1 or 2 processes) | {fmt(rs, 1, 'x')} | {fmt(rw, 1, 'x')} | >= 5x | "
        f"{_ok(max([x for x in (rs, rw) if x is not None], default=None), TARGETS['peer_ratio'])} |")

    ls, ll = s.get("latency_single"), s.get("latency_load")
    add(f"| latency over the LLM's 200 ms, single trace, idle worker | p50 {fmt(ls and ls['overhead_p50_ms'], 0, ' ms')}, "
        f"p95 {fmt(ls and ls['overhead_p95_ms'], 0, ' ms')} | | p50 <= 30 ms | "
        f"{_ok(ls and ls['overhead_p50_ms'], TARGETS['single_p50_ms'], at_most=True)} |")
    add(f"| latency over 200 ms under load ({fmt(ll and ll['rate'], 1)} traces/s) | p50 {fmt(ll and ll['overhead_p50_ms'], 0, ' ms')}, "
        f"p95 {fmt(ll and ll['overhead_p95_ms'], 0, ' ms')} | | | |")
    p = results.get("producer")
    if p:
        b, nb = p["blocking"], p["non_blocking"]
        add(f"| enqueue(), blocking, in the caller | p50 {b['p50_us']:.0f} us, p99 {b['p99_us']:.0f} us | | p99 <= 1.5 ms | "
            f"{_ok(b['p99_us'], TARGETS['enqueue_p99_us'], at_most=True)} |")
        add(f"| enqueue(block=False), in the caller | p50 {nb['p50_us']:.1f} us, p99 {nb['p99_us']:.1f} us "
            f"(sender {nb['sender_msgs_per_s']:.0f} msg/s; delivered {p['delivered']}/{p['enqueued']}) | | p99 <= 50 us | "
            f"{_ok(nb['p99_us'], TARGETS['nonblocking_p99_us'], at_most=True)} |")
        if p.get("non_blocking_gc_off"):
            g = p["non_blocking_gc_off"]
            add(f"| enqueue(block=False), garbage collector off (the path's own cost) | p50 {g['p50_us']:.1f} us, "
                f"p99 {g['p99_us']:.1f} us | | | |")
        sl = {k: p.get(k) for k in ("baseline_after_sleep", "blocking_after_sleep", "non_blocking_after_sleep")}
        if all(sl.values()):
            add(f"| after 20 ms idle: trivial function / enqueue() / enqueue(block=False) (p50) | "
                f"{sl['baseline_after_sleep']['p50_us']:.0f} / {sl['blocking_after_sleep']['p50_us']:.0f} / "
                f"{sl['non_blocking_after_sleep']['p50_us']:.0f} us | | | |")
        wf = p["workflow_ms"]
        add(f"| workflow wall time, p50 (mean): alone / + enqueue() / + enqueue(block=False) | "
            f"{wf['none']['p50']:.1f} ({wf['none']['mean']:.1f}) / {wf['blocking']['p50']:.1f} ({wf['blocking']['mean']:.1f}) / "
            f"{wf['non_blocking']['p50']:.1f} ({wf['non_blocking']['mean']:.1f}) ms | | | |")
    nf = results.get("producer_redis_no_aof")
    if nf:
        add(f"| enqueue(), blocking, Redis without appendfsync always | p50 {nf['blocking']['p50_us']:.0f} us, "
            f"p99 {nf['blocking']['p99_us']:.0f} us | | | |")

    def rss(r: dict) -> str:
        parts = []
        for key, label in (("rss_1", "1 proc"), ("rss_2", "2 procs")):
            if r.get(key):
                parts.append(f"{label}: max {max(r[key].values()):.0f} MB")
        return "; ".join(parts) or "n/a"

    all_rss = [v for r in (s, w) for k in ("rss_1", "rss_2") for v in (r.get(k) or {}).values()]
    add(f"| worker RSS after the run (per process) | {rss(s)} | {rss(w)} | <= 300 MB | "
        f"{_ok(max(all_rss) if all_rss else None, TARGETS['rss_mb'], at_most=True)} |")

    # where the time goes
    add("")
    add("Where a trace's time goes in the worker (p50 ms per trace; from timers around each step):")
    add("")
    add("| step | single trace, idle (sqlite) | under load, 1 process (sqlite) | under load, 1 process (HTTP) |")
    add("|---|---|---|---|")
    cols = [(ls or {}).get("phases", {}), (s.get("throughput_1") or {}).get("phases", {}),
            (w.get("throughput_1") or {}).get("phases", {})]
    for step in ("queue_wait", "task", "evaluate", "get_trace", "lock", "redis_cache", "judges", "judges_minus_llm_latency",
                 "write_back", "write_feedback", "write_summary", "summary_tags", "summary_report", "evaluate_other",
                 "celery_and_task_wrapper"):
        if any(step in c for c in cols):
            add(f"| {step} | " + " | ".join(fmt(c.get(step, {}).get("p50_ms"), 1) for c in cols) + " |")
    add("")
    add("CPU use during the 1-process throughput runs (% of one core; the machine has "
        f"{results['machine']['cores']} cores = {results['machine']['cores'] * 100} %):")
    for name, r in (("sqlite", s), ("http", w)):
        t = r.get("throughput_1")
        if t:
            per = f" = {t['worker_cpu_ms_per_trace']:.0f} ms of worker CPU per trace" if t.get("worker_cpu_ms_per_trace") else ""
            if t.get("server_cpu_ms_per_trace"):
                per += f" + {t['server_cpu_ms_per_trace']:.0f} ms in the mlflow server"
            add(f"- {name}: " + ", ".join(f"{k} {v:.0f} %" for k, v in t["cpu_percent"].items()) + per)
        t2 = r.get("throughput_2")
        if t2:
            add(f"- {name}, 2 processes: " + ", ".join(f"{k} {v:.0f} %" for k, v in t2["cpu_percent"].items()))
    for name, r in (("sqlite", s), ("http", w)):
        if r.get("rss_1_started"):
            add(f"- worker RSS ({name}) right after start: {max(r['rss_1_started'].values()):.0f} MB; after the run: "
                f"{max((r.get('rss_1') or {0: 0}).values()):.0f} MB")
    for name, r in (("sqlite", s), ("http", w)):
        t = r.get("throughput_1")
        if t and t.get("ops"):
            add(f"- MLflow calls per trace ({name}, mean ms each): " + ", ".join(
                f"{k} {v['count'] / t['traces']:.1f} x {fmt(v['mean_ms'], 1)}" for k, v in sorted(t["ops"].items())))
    for name, r in (("sqlite", s), ("http", w)):
        prof = r.get("profile_1")
        if prof and prof.get("samples"):
            add(f"- py-spy, 1-process {name} worker under load ({prof['samples']} CPU samples), by step: "
                + ", ".join(f"{k} {v} %" for k, v in prof["steps"].items()))
            add("  by library: " + ", ".join(f"{k} {v} %" for k, v in prof["libraries"].items()))
    if results.get("gate_latency"):
        add("- " + gate_latency.describe(results["gate_latency"]))
    m = results["machine"]
    add("")
    add(f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
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
