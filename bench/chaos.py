#!/usr/bin/env python
"""Chaos run: break real processes on loopback mid-run and count what survives.

    .venv/bin/python bench/chaos.py [--traces 100] [--outage 30] [--redis-down 10] [--scenarios kill,mlflow,redis]

Each scenario gets its own private ``redis-server`` (append-only file on),
MLflow store (a sqlite file, or a real ``mlflow server`` with gunicorn workers
for the outage), the fake LLM server (150 ms per call) and ``tracejudge
worker`` subprocesses:

* ``kill``: SIGKILL a worker with >= 100 evaluations in flight and queued, start a new one;
* ``mlflow``: stop the MLflow tracking server for ``--outage`` seconds mid-run, start it on the same port;
* ``redis``: restart Redis mid-run (``--redis-down`` seconds down); an enqueue meanwhile must fail fast;
* ``sigterm`` (optional): warm shutdown of a busy worker, then a new one.

It prints one table: per scenario the traces, verdicts, evaluations (feedback
assessments, one per (span, judge)) expected and written, duplicates, lost,
LLM calls against the plan, and the recovery time (failure start -> last
verdict). Everything it started is stopped on exit, also on failure or Ctrl-C.
Exit status 0 when every scenario lost and duplicated nothing.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the scenarios live in tests/
from tests import chaos  # noqa: E402

SCENARIOS = ("kill", "mlflow", "redis", "sigterm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=100, help="traces per scenario (default 100)")
    parser.add_argument("--outage", type=float, default=30, help="seconds the MLflow server is down (default 30)")
    parser.add_argument("--redis-down", type=float, default=10, help="seconds Redis is down (default 10)")
    parser.add_argument("--latency-ms", type=float, default=150, help="fake LLM latency per call (default 150)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--scenarios", default="kill,mlflow,redis", help=f"comma-separated, of {','.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")

    # SIGTERM unwinds like Ctrl-C, so every `with` block stops what it started.
    signal.signal(signal.SIGTERM, _interrupt)

    runs = {
        "kill": lambda: chaos.run_worker_kill(
            traces=args.traces, latency_ms=args.latency_ms, concurrency=args.concurrency, log=log
        ),
        "mlflow": lambda: chaos.run_mlflow_outage(
            traces=args.traces, outage=args.outage, latency_ms=args.latency_ms, concurrency=args.concurrency, log=log
        ),
        "redis": lambda: chaos.run_redis_restart(
            traces=args.traces, down=args.redis_down, latency_ms=args.latency_ms, concurrency=args.concurrency, log=log
        ),
        "sigterm": lambda: chaos.run_graceful_shutdown(traces=max(8, args.traces // 8), log=log),
    }
    results: list[chaos.ScenarioResult] = []
    failed: list[str] = []
    started = time.monotonic()
    try:
        for name in chosen:
            try:
                results.append(runs[name]())
            except KeyboardInterrupt:
                raise
            except Exception:
                log(f"[{name}] crashed:\n{traceback.format_exc()}")
                failed.append(name)
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        failed.append("interrupted")

    print()
    print(chaos.format_table(results))
    print(f"\n{len(results)} scenario(s) in {time.monotonic() - started:.0f} s; recovery = failure start -> last verdict.")
    for result in results:
        extra = {k: v for k, v in result.notes.items() if k != "worker_logs"}
        print(f"- {result.scenario}: {_plain(extra)}")
        if not result.ok:
            failed.append(result.scenario)
            print(result.describe())
            print(result.notes.get("worker_logs", ""))
    if args.json:
        args.json.write_text(json.dumps([_as_json(r) for r in results], indent=2))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _plain(notes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in notes.items())


def _as_json(result: chaos.ScenarioResult) -> dict[str, Any]:
    return {
        "scenario": result.scenario,
        "traces": result.traces,
        "verdicts": result.verdicts,
        "statuses": dict(result.outcome.statuses),
        "evaluations_expected": result.audit.expected,
        "evaluations_written": result.audit.written,
        "duplicates": result.audit.duplicates,
        "lost": result.audit.lost,
        "llm_calls": result.llm_requests,
        "llm_calls_plan": result.expected_llm_requests,
        "recovery_seconds": result.recovery_seconds,
        "notes": {k: str(v) for k, v in result.notes.items() if k != "worker_logs"},
    }


if __name__ == "__main__":
    sys.exit(main())
