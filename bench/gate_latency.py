#!/usr/bin/env python
"""Gate latency (target 9): from the workflow's return to the verdict in the caller, minus the LLM's latency.

    .venv/bin/python bench/gate_latency.py [--samples 30] [--latency-ms 200]

A private stack (``tests/chaos.py``'s ``ChaosStack``: redis-server, a sqlite
MLflow store, the test LLM server, one ``tracejudge worker`` with default
settings). Each sample records an ``article_writer`` trace in this process
(MLflow's default asynchronous export), then ``enqueue(trace_id, gate=True)``
and ``verdict()``; the clock runs from the workflow's return to the verdict.
The judges of one trace run concurrently, so one LLM round (``--latency-ms``)
is subtracted. Baseline in the same run: the same with tracejudge's flush of
MLflow's batched spans switched off (the worker then waits for MLflow's own
export, up to 5 s). The first sample of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the scenarios live in tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, pct  # noqa: E402

TARGET_MS = 500.0


def _samples(stack: Any, n: int, *, flush: bool, latency_ms: float) -> list[float]:
    import tracejudge
    from tracejudge.mlflow_io import export
    from tracejudge.testing import workflows
    from tests.chaos import chaos_config

    config = chaos_config()
    original = export.flush_pending_traces
    if not flush:
        export.flush_pending_traces = lambda: None  # MLflow's own batch export only
    try:
        out = []
        for i in range(n + 1):
            trace_id = workflows.record_article_trace(topic=f"gate {i}")
            returned = time.perf_counter()
            verdict = tracejudge.enqueue(trace_id, config=config, gate=True).verdict(timeout=120, raise_on_block=False)
            if verdict.status != "passed":
                raise RuntimeError(f"gate sample {i}: {verdict.summary()}")
            if i:
                out.append((time.perf_counter() - returned) * 1000 - latency_ms)
        return out
    finally:
        export.flush_pending_traces = original


def measure(*, samples: int = 30, baseline_samples: int = 8, latency_ms: float = 200, log: Any = None) -> dict[str, Any]:
    """Gate latency p50/p90 (ms, LLM latency subtracted), with the flush and without it (baseline)."""
    from tests.chaos import ChaosStack

    with ChaosStack(latency_ms=latency_ms) as stack:
        stack.worker("gate", concurrency=4)
        if log:
            log(f"[gate latency] {samples} samples with the flush, {baseline_samples} without")
        ours = _samples(stack, samples, flush=True, latency_ms=latency_ms)
        base = _samples(stack, baseline_samples, flush=False, latency_ms=latency_ms)
    return {
        "samples": len(ours),
        "latency_ms": latency_ms,
        "p50_ms": statistics.median(ours),
        "p90_ms": pct(ours, 90),
        "baseline_samples": len(base),
        "baseline_p50_ms": statistics.median(base),
        "baseline_p90_ms": pct(base, 90),
        "target_ms": TARGET_MS,
    }


def describe(r: dict[str, Any]) -> str:
    met = "yes" if r["p50_ms"] <= r["target_ms"] else "NO"
    return (
        f"target 9, gate latency (workflow return -> verdict in the caller, minus {r['latency_ms']:.0f} ms LLM, default "
        f"settings, sqlite store): p50 {r['p50_ms']:.0f} ms, p90 {r['p90_ms']:.0f} ms over {r['samples']} gates "
        f"(target <= {r['target_ms']:.0f} ms: {met}); baseline without the export flush: p50 {r['baseline_p50_ms']:.0f} ms, "
        f"p90 {r['baseline_p90_ms']:.0f} ms ({r['baseline_samples']} gates)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--baseline-samples", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=200)
    args = parser.parse_args(argv)
    result = measure(samples=args.samples, baseline_samples=args.baseline_samples, latency_ms=args.latency_ms,
                     log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
    print()
    print(describe(result))
    m = machine()
    print(f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB, Python {m['python']}. "
          f"Command: .venv/bin/python bench/gate_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0 if result["p50_ms"] <= result["target_ms"] else 1


if __name__ == "__main__":
    sys.exit(main())
