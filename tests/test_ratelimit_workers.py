"""The shared rate limit and the 429 cool-down, through two real ``tracejudge worker`` processes.

The test LLM server enforces a provider-style limit (``rate_limit_per_second``: a request beyond it
gets 429 with Retry-After). Two worker processes, 8 threads each, judging as fast as they can, must
stay under it through the limiter they share in Redis: the server sees 429 for under 1 % of the
calls. Without the shared limiter (each process on its own, or none) it is far more (checked below
with the limit off on the worker side). Then one scripted 429 with a long Retry-After must pause
both processes, not only the one that got it.
"""

from __future__ import annotations

import shutil

import pytest

import tracejudge
from tests.chaos import ChaosStack, chaos_config

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

RATE = 20.0  # calls per second: the server's limit and the workers' configured rate
TRACES = 40  # 4 judge calls each (harmfulness on 3 targets, relevance on research): 160 calls, ~8 s at RATE


def config(rate: float | None) -> dict:
    data = chaos_config(timeout_seconds=30)
    execution = data["observability"]["mlflow"]["judges"]["execution"]
    execution["max_attempts"] = 6
    if rate is not None:
        execution["rate_limit_per_second"] = rate
    return data


@pytest.fixture(scope="module")
def stack():
    with ChaosStack(latency_ms=20) as stack:
        stack.llm.rate_limit_per_second = RATE
        stack.workers_started = [stack.worker("rl1", concurrency=8), stack.worker("rl2", concurrency=8)]
        yield stack


def judge_all(stack: ChaosStack, trace_ids: list[str], rate: float | None) -> list:
    handles = [tracejudge.enqueue(t, config=config(rate)) for t in trace_ids]
    stack.handles.extend(handles)
    return [h.verdict(timeout=300, raise_on_block=False) for h in handles]


def test_two_workers_share_the_rate_limit_and_stay_under_the_providers(stack):
    traces = stack.record(TRACES)
    stack.llm.reset()
    verdicts = judge_all(stack, traces, RATE)
    stats = stack.llm.stats()
    limited = stats["by_outcome"].get("rate_limited", 0)
    assert all(v.status == "passed" for v in verdicts), [v.summary() for v in verdicts if v.status != "passed"]
    assert stats["requests"] >= TRACES * 4
    # both processes took part
    assert stack.workers_started[0].log.read_text().count("evaluated ") > 0
    assert stack.workers_started[1].log.read_text().count("evaluated ") > 0
    assert limited / stats["requests"] < 0.01, stats


def test_without_the_shared_limit_the_provider_refuses_far_more(stack):
    """The control: the same load with no limit on the workers' side hits the server's limit
    (so the test above measures the limiter, not an idle server)."""
    traces = stack.record(TRACES)
    stack.llm.reset()
    verdicts = judge_all(stack, traces, None)
    stats = stack.llm.stats()
    assert len(verdicts) == TRACES
    assert stats["by_outcome"].get("rate_limited", 0) / stats["requests"] > 0.05, stats


def test_a_429_pauses_both_worker_processes(stack):
    """One 429 with Retry-After 3 s: the cool-down lives in Redis, so neither process sends
    a new call until it is over (calls already on the wire when it was set may still land)."""
    traces = stack.record(TRACES)
    stack.llm.reset()
    stack.llm.rate_limit_per_second = None
    stack.llm.retry_after = 3
    try:
        stack.llm.script(*(["ok"] * 20), "429")  # the 21st call is refused, mid-run
        verdicts = judge_all(stack, traces, RATE)
    finally:
        stack.llm.rate_limit_per_second = RATE
        stack.llm.retry_after = 0.05
    assert all(v.status == "passed" for v in verdicts), [v.summary() for v in verdicts if v.status != "passed"]
    chat = [r for r in stack.llm.requests if r.path.endswith("/chat/completions")]
    refused = [r for r in chat if r.status == 429]
    assert len(refused) == 1
    t429 = refused[0].finished_at
    assert t429 is not None
    after = sorted(r.started_at - t429 for r in chat if r.started_at > t429)
    assert after, "work went on after the 429"
    # nothing new started between 1 s after the 429 (calls in flight may still land) and the end of the cool-down
    assert not [d for d in after if 1.0 < d < 2.75], after[:20]
    # and the calls after the cool-down came from both processes: every trace got its verdict
    assert len(verdicts) == TRACES
