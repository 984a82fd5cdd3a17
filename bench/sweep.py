#!/usr/bin/env python
"""Try worker pool, concurrency and write-concurrency options on the same work; print one row each.

    .venv/bin/python bench/sweep.py [--traces 120] [--store sqlite|http] [--profile]
        [--configs "threads:16:8,threads:32:8,prefork:2:8,threads:16:-,..."] [--processes 1] [--single 20]

A config is ``POOL:CONCURRENCY:WRITE_CONCURRENCY[:WHATIF+WHATIF]`` (``-`` as the write
concurrency: the package's default for the store; what-ifs:
bench-only patches in ``instrumented_worker.py`` that show what a change in
the package would gain, e.g. ``tags2+metricsonly``). Each row starts fresh
workers, warms them, enqueues ``--traces`` fresh traces at once and times
enqueue-to-last-verdict (as ``run.py`` does). ``--profile`` samples the
worker with py-spy during each row and prints where its CPU went.
Results go to ``bench/results/sweep-*.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR  # noqa: E402

import harness as h  # noqa: E402

DEFAULT_CONFIGS = "threads:8:8,threads:16:8,threads:32:8,prefork:2:8,prefork:4:8,threads:16:4,threads:16:16"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", type=int, default=120)
    p.add_argument("--store", choices=["sqlite", "http"], default="sqlite")
    p.add_argument("--mlflow-workers", type=int, default=4)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--configs", default=DEFAULT_CONFIGS)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--label", default="")
    p.add_argument("--sqlite-wal", action="store_true", help="put the store's sqlite file in WAL mode")
    p.add_argument("--single", type=int, default=0,
                   help="after each row's throughput run, N traces one at a time on the idle worker (run.py's row 6)")
    args = p.parse_args(argv)

    configs = []
    for item in args.configs.split(","):
        pool, conc, wc, *rest = item.split(":")
        configs.append((pool, int(conc), None if wc == "-" else int(wc), (rest[0].replace("+", ",") if rest else "")))
    rows = []
    with ExitStack() as stack:
        services = h.start_services(stack)
        store = (h.sqlite_store(services, wal=args.sqlite_wal) if args.store == "sqlite"
                 else h.http_store(services, workers=args.mlflow_workers, wal=args.sqlite_wal))
        warm = h.make_traces(store, 4 * len(configs), "warmup")
        for i, (pool, conc, wc, whatif) in enumerate(configs):
            traces = h.make_traces(store, args.traces, f"sweep{i}")
            workers = h.start_workers(services, store, processes=args.processes, pool=pool, concurrency=conc,
                                      write_concurrency=wc, label=f"s{i}", whatif=whatif)
            h.warm_up(workers, warm[4 * i: 4 * i + 4])
            out = services.base / f"pyspy-sweep{i}.txt" if args.profile else None
            seconds = max(5.0, min(20.0, args.traces / 10))
            row = h.throughput(services, store, workers, traces, profile_seconds=seconds if out else 0, profile_out=out)
            if args.single:
                h.say("  latency: one trace at a time on the idle worker")
                row["latency_single"] = h.latency_single(workers, h.make_traces(store, args.single, f"single{i}"))
            row["rss_max_mb"] = max(row["rss_mb"].values())
            if out is not None:
                from profile_worker import summarize

                row["profile"] = summarize(out)
                h.say(f"  py-spy by step: {row['profile']['steps']}")
                h.say(f"  py-spy by library: {row['profile']['libraries']}")
            workers.stop()
            rows.append(row)
    print()
    print(f"| store | procs | pool | -c | write conc | what-if | traces/s | judge calls/s | feedback/s | store calls/s | worker CPU % | "
          f"p50 write-back ms | p50 get_trace ms | RSS MB | idle overhead p50 / p95 ms | idle write-back p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cpu = sum(v for k, v in r["cpu_percent"].items() if k.startswith("worker"))
        ph = r["phases"]
        print(f"| {r['store']} | {r['processes']} | {r['pool']} | {r['concurrency']} | {r['write_concurrency']} | "
              f"{r.get('whatif') or '-'} | "
              f"{r['traces_per_s']:.1f} | {r['judge_calls_per_s']:.0f} | {r['feedback_writes_per_s']:.0f} | "
              f"{r['store_calls_per_s']:.0f} | {cpu:.0f} | "
              f"{(ph.get('write_back') or {}).get('p50_ms', (ph.get('write_feedback') or {}).get('p50_ms', 0) + (ph.get('write_summary') or {}).get('p50_ms', 0)):.0f} | "
              f"{ph.get('get_trace', {}).get('p50_ms', 0):.0f} | "
              f"{r['rss_max_mb']:.0f} | {_single(r)} |")
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    path = out / f"sweep-{args.store}{('-' + args.label) if args.label else ''}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(rows, indent=2, default=str))
    print(f"\nsaved: {path}")
    return 0


def _single(row: dict) -> str:
    single = row.get("latency_single")
    if not single:
        return "- | -"
    write_back = (single["phases"].get("write_back") or {}).get("p50_ms")
    return (f"{single['overhead_p50_ms']:.0f} / {single['overhead_p95_ms']:.0f} | "
            f"{'-' if write_back is None else f'{write_back:.0f}'}")


if __name__ == "__main__":
    sys.exit(main())
