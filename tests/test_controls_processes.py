"""Production controls across real processes: the daily budget held by two worker processes.

Two ``tracejudge worker`` subprocesses judge more traces than a small budget
pays for, against the real Redis, the sqlite MLflow store and the fake LLM
over HTTP. The spend counted must end within 1% under the budget, no call may
go over it (the LLM server's request count equals the results that cost
money), and every judge left out is an explicit BUDGET_EXCEEDED error.
"""

from __future__ import annotations

import uuid

import pytest

import tracejudge
from tracejudge.testing.processes import WorkerProcess

BUDGET_USD = 0.09
TRACES = 60


def budget_config(daily_usd: float) -> dict:
    return {
        "observability": {
            "mlflow": {
                "judges": {
                    "workflow_defaults": ["coherence", "harmfulness"],
                    # an easy-to-read price: USD 1 per 1M tokens either way
                    "pricing": {"gpt-4o-mini": {"input": 1.0, "output": 1.0}},
                    "budget": {"daily_usd": daily_usd, "on_exceed": "skip", "reserve_output_tokens": 96},
                }
            }
        }
    }


def test_two_worker_processes_stay_within_the_budget(pipeline_env, fake_llm, redis_url, tmp_path):
    import mlflow
    import redis

    from tracejudge.controls.budget import read_spend
    from tracejudge.testing.workflows import record_article_trace

    prefix = f"tjbudget-{uuid.uuid4().hex[:8]}:"  # a fresh day's budget, and queues of its own
    env = {**pipeline_env, "TRACEJUDGE_KEY_PREFIX": prefix}
    trace_ids = [record_article_trace(in_run=False, topic=f"topic {i}") for i in range(TRACES)]
    mlflow.flush_trace_async_logging()
    before = fake_llm.stats()["requests"]
    workers = [WorkerProcess(env, name=f"budget{i}", concurrency=8, log=tmp_path / f"w{i}.log").start() for i in range(2)]
    try:
        import os

        saved = os.environ.get("TRACEJUDGE_KEY_PREFIX")
        os.environ["TRACEJUDGE_KEY_PREFIX"] = prefix
        from tracejudge.worker import reset_app

        reset_app()
        try:
            config = budget_config(BUDGET_USD)
            handles = [tracejudge.enqueue(t, config=config) for t in trace_ids]
            verdicts = [h.verdict(timeout=240, raise_on_block=False) for h in handles]
        finally:
            os.environ["TRACEJUDGE_KEY_PREFIX"] = saved or ""
            reset_app()
    finally:
        for w in workers:
            w.stop()
    calls = fake_llm.stats()["requests"] - before
    results = [r for v in verdicts for r in v.results()]
    refused = [r for r in results if r.error is not None and r.error.type == "BUDGET_EXCEEDED"]
    paid = [r for r in results if r.cost_usd is not None and not r.cached]
    spend = read_spend(redis.Redis.from_url(redis_url), prefix=prefix, limit_usd=BUDGET_USD)
    overshoot = (spend.spent_usd - BUDGET_USD) / BUDGET_USD
    print(f"\nbudget ${BUDGET_USD} with 2 worker processes: spent ${spend.spent_usd:.6f} ({overshoot:+.3%}), "
          f"{calls} LLM calls, {len(refused)} judges refused, held at the end ${spend.reserved_usd:.6f}")

    assert refused, "the budget was never reached: the test proves nothing"
    assert all(not r.passed and r.score is None for r in refused)  # never a pass
    assert all(v.status == "error" for v in verdicts if any(r in refused for r in v.results()))
    assert calls == len(paid)  # every LLM call that was made was paid for, none made past a refusal
    assert spend.spent_usd == pytest.approx(sum(r.cost_usd for r in paid), rel=1e-6)
    assert spend.spent_usd <= BUDGET_USD  # 0 calls over the budget
    assert spend.spent_usd >= BUDGET_USD * 0.99  # and it was used up to within 1%
    assert spend.reserved_usd == 0
