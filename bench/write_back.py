#!/usr/bin/env python
"""One trace's write-back alone, on an idle process, at several write concurrencies (local sqlite store).

    .venv/bin/python bench/write_back.py [--traces 30] [--concurrency 1,2,4,8] [--pause 0.3] [--wal]

The worker's write-back of one trace, without the rest of the worker: 6 feedbacks, 2 trace tags, the
report (``log_dict``) and the metrics (``log_batch``), 10 MLflow calls, through ``TraceStore.write_all``
as the worker makes them, one trace every ``--pause`` s (an idle worker). Rows are interleaved round by
round, so a noisy moment hits every setting alike. Prints p50 / p95 / mean of the write-back (ms).

Run it under ``strace -f -e trace=clock_nanosleep,nanosleep`` to see sqlite's busy-handler sleeps
(1, 2, 5, 10, 15, 20, 25, 50, 100 ms: a thread that found the database locked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", type=int, default=30, help="traces per setting")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--pause", type=float, default=0.3)
    p.add_argument("--wal", action="store_true", help="the sqlite file in WAL mode")
    args = p.parse_args(argv)
    settings = [int(x) for x in args.concurrency.split(",")]

    from tracejudge.judges.model import JudgeResult
    from tracejudge.mlflow_io.store import TraceStore

    times: dict[int, list[float]] = {wc: [] for wc in settings}
    with ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="tracejudge-writeback-"))
        services = h.Services(stack=stack, base=base, redis=None, llm=None, config_path=base / "none")  # type: ignore[arg-type]
        store = h.sqlite_store(services, wal=args.wal)
        traces = h.make_traces(store, args.traces * len(settings) + len(settings), "wb")
        stores = {wc: TraceStore(store.uri, write_concurrency=wc) for wc in settings}
        for s in stores.values():
            stack.callback(s.close)

        def write(ts: TraceStore, trace_id: str) -> float:
            loaded = ts.load_trace(trace_id)
            spans = [t.span_id for t in loaded.targets] or [None]
            results = [JudgeResult(name=f"judge{i}", span_id=spans[i % len(spans)], score=0.85, threshold=0.8, passed=True,
                                   rationale="bench", model="bench", key=uuid.uuid4().hex) for i in range(6)]
            run_id = ts.report_run(loaded)
            calls = ts.result_calls(trace_id, results, evaluation_id=uuid.uuid4().hex)
            calls += ts.summary_calls(trace_id, run_id=run_id, tags={"tracejudge.status": "passed", "tracejudge.score": "0.85"},
                                      report={"trace_id": trace_id, "results": [r.model_dump(mode="json") for r in results]},
                                      metrics={"quality_score": 0.85, "quality_threshold_pass": 1.0}, step=loaded.timestamp_ms or 0)
            started = time.perf_counter()
            ts.write_all(calls)
            return time.perf_counter() - started

        it = iter(traces)
        for wc in settings:  # warm each store's client and pool
            write(stores[wc], next(it))
        for _ in range(args.traces):
            for wc in settings:
                time.sleep(args.pause)
                times[wc].append(write(stores[wc], next(it)))
    print(f"\nwrite-back of one trace (10 MLflow calls), sqlite{' WAL' if args.wal else ''}, {args.traces} traces per setting, "
          f"{args.pause:g} s apart; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| write concurrency | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for wc, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(f"| {wc} | {ms[len(ms) // 2]:.1f} | {ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]:.1f} | {statistics.mean(ms):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
