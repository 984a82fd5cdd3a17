"""The production controls' figures: sampling accuracy, backfill rate, budget overshoot with 2 workers.

    .venv/bin/python bench/controls.py [--ids 2000] [--traces 400] [--budget-traces 60]

Everything runs on loopback and is stopped at the end: a private ``redis-server``,
a sqlite MLflow store in a temporary directory, the fake LLM server, and two
``tracejudge worker`` processes for the budget row. Each figure is printed beside
a baseline measured in the same run:

* sampling: the hash decision at 0.25 over N random ``tr-<32 hex>`` ids, and
  Python's ``random.random() < 0.25`` over the same number, as a reference for
  what chance alone gives;
* backfill: traces enqueued per second by ``run_backfill`` (search pages, skip
  rules, queue-depth check, one ``enqueue`` each), against a plain loop of
  ``enqueue`` over the same ids (no search);
* budget: two worker processes (8 threads each) against a budget smaller than
  the work; the spend against the budget, and the calls made past it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def sampling_figure(n: int) -> None:
    from tracejudge.controls.sampling import sampled

    rounds = 20
    ours, chance = [], []
    for _ in range(rounds):
        ids = [f"tr-{uuid.uuid4().hex}" for _ in range(n)]
        ours.append(sum(sampled(t, 0.25) for t in ids) / n)
        chance.append(sum(random.random() < 0.25 for _ in range(n)) / n)
    fixed = [f"tr-{i:032x}" for i in range(n)]
    share = sum(sampled(t, 0.25) for t in fixed) / n
    print(f"sampling at 0.25 over {n} ids: fixed ids {share:.2%} ({(share - 0.25) * 100:+.2f} points); "
          f"{rounds} sets of random ids: mean {statistics.fmean(ours):.2%}, mean |error| "
          f"{statistics.fmean(abs(s - 0.25) for s in ours) * 100:.2f} points, max {max(abs(s - 0.25) for s in ours) * 100:.2f}")
    print(f"  baseline random.random() < 0.25: mean |error| {statistics.fmean(abs(s - 0.25) for s in chance) * 100:.2f} points, "
          f"max {max(abs(s - 0.25) for s in chance) * 100:.2f} (binomial sd {((0.25 * 0.75 / n) ** 0.5) * 100:.2f})")


def backfill_figure(traces: int, store: str, redis_url: str) -> None:
    import mlflow
    import redis

    import tracejudge
    from tracejudge.backfill import run_backfill
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks.state import RedisState
    from tracejudge.config import load_config
    from tracejudge.testing.workflows import record_plain_trace
    from tracejudge.worker import reset_app

    mlflow.set_tracking_uri(store)
    experiment_id = mlflow.create_experiment(f"bench-backfill-{uuid.uuid4().hex[:6]}")
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = [record_plain_trace(f"q{i}?", f"a{i}.") for i in range(traces)]
    mlflow.flush_trace_async_logging()
    config = {"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"]}}}}
    r = redis.Redis.from_url(redis_url)
    rates = {}
    for label in ("plain enqueue loop", "backfill"):
        os.environ["TRACEJUDGE_KEY_PREFIX"] = f"bench-{uuid.uuid4().hex[:6]}:"
        reset_app()
        tracejudge.enqueue(f"tr-{'0' * 32}", config=config)  # warm: connections, app
        started = time.perf_counter()
        if label == "backfill":
            result = run_backfill(
                store=TraceStore(store), state=RedisState(r, prefix=os.environ["TRACEJUDGE_KEY_PREFIX"]), config=load_config(config),
                experiment_id=experiment_id, fingerprint="-", checkpoint="bench",
                enqueue=lambda t: tracejudge.enqueue(t, config=config), max_queue=traces * 10,
            )
            assert result.counts.enqueued == traces, result.counts
        else:
            for t in ids:
                tracejudge.enqueue(t, config=config)
        rates[label] = traces / (time.perf_counter() - started)
    print(f"backfill: {rates['backfill']:.0f} traces enqueued/s over {traces} traces "
          f"(baseline, enqueue alone on the same ids: {rates['plain enqueue loop']:.0f}/s)")


def budget_figure(traces: int, store: str, redis_url: str, llm, workdir: Path) -> None:
    import mlflow
    import redis

    import tracejudge
    from tracejudge.controls.budget import read_spend
    from tracejudge.testing.processes import WorkerProcess
    from tracejudge.testing.workflows import record_article_trace
    from tracejudge.worker import reset_app

    budget = 0.09
    prefix = f"bench-budget-{uuid.uuid4().hex[:6]}:"
    os.environ["TRACEJUDGE_KEY_PREFIX"] = prefix
    reset_app()
    mlflow.set_experiment(f"bench-budget-{uuid.uuid4().hex[:6]}")
    ids = [record_article_trace(in_run=False, topic=f"t{i}") for i in range(traces)]
    mlflow.flush_trace_async_logging()
    calls_before = llm.stats()["requests"]
    env = {"TRACEJUDGE_REDIS_URL": redis_url, "TRACEJUDGE_LLM_BASE_URL": llm.base_url, "TRACEJUDGE_LLM_API_KEY": "sk-bench",
           "MLFLOW_TRACKING_URI": store, "TRACEJUDGE_KEY_PREFIX": prefix}
    config = {"observability": {"mlflow": {"judges": {
        "workflow_defaults": ["coherence", "harmfulness"],
        "pricing": {"gpt-4o-mini": {"input": 1.0, "output": 1.0}},
        "budget": {"daily_usd": budget, "reserve_output_tokens": 96},
    }}}}
    workers = [WorkerProcess(env, name=f"bench{i}", concurrency=8, log=workdir / f"w{i}.log").start() for i in range(2)]
    try:
        verdicts = [h.verdict(timeout=300, raise_on_block=False) for h in [tracejudge.enqueue(t, config=config) for t in ids]]
    finally:
        for w in workers:
            w.stop()
    results = [r for v in verdicts for r in v.results()]
    refused = sum(1 for r in results if r.error is not None and r.error.type == "BUDGET_EXCEEDED")
    paid = [r.cost_usd for r in results if r.cost_usd]
    spend = read_spend(redis.Redis.from_url(redis_url), prefix=prefix)
    calls = llm.stats()["requests"] - calls_before
    print(f"budget ${budget} with 2 worker processes x 8 threads: spent ${spend.spent_usd:.6f} "
          f"({(spend.spent_usd - budget) / budget:+.2%} against the budget), LLM calls made {calls} (paid results {len(paid)}), "
          f"{refused} refused as BUDGET_EXCEEDED; baseline without a budget: all {len(results)} judge calls, "
          f"~${sum(paid) * len(results) / max(1, len(paid)):.6f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=2000)
    parser.add_argument("--traces", type=int, default=400)
    parser.add_argument("--budget-traces", type=int, default=60)
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    from tracejudge.testing import FakeLLMServer
    from tracejudge.testing.processes import RedisServer

    sampling_figure(args.ids)
    workdir = Path(tempfile.mkdtemp(prefix="tracejudge-bench-controls-"))
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    with RedisServer(directory=workdir / "redis") as redis_server, FakeLLMServer(latency_ms=0) as llm:
        os.environ["TRACEJUDGE_REDIS_URL"] = redis_server.url
        backfill_figure(args.traces, store, redis_server.url)
        budget_figure(args.budget_traces, store, redis_server.url, llm, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
