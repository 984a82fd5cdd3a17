"""Budget numbers are honest (issue 18, point 6).

Real Redis (the workers' budget script), the real LLM client over HTTP against the fake LLM server: a call
sent and then cancelled is settled at its estimate, not $0; invalid replies before a later timeout are paid;
a call waiting longer than its lease keeps its hold; a refusal says what is spent and what calls in flight
hold; ``tracejudge budget`` shows both.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import yaml

from tracejudge.judges import errors
from tracejudge.judges.client import LLMClient, LLMReply
from tracejudge.judges.controls import CallControls
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.model import JudgeReply, TokenUsage
from tracejudge.judges.pricing import PriceTable

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "system", "content": "Judge the answer."}, {"role": "user", "content": "answer: " + "words " * 200}]


@pytest.fixture()
def prefix() -> str:
    return f"tjbudget-{uuid.uuid4().hex[:8]}:"


def spend(redis_url: str, prefix: str):
    import redis as redis_lib

    from tracejudge.controls.budget import read_spend

    return read_spend(redis_lib.Redis.from_url(redis_url), prefix=prefix)


async def _budget(redis_url: str, prefix: str, daily_usd: float, **kwargs):
    import redis.asyncio

    from tracejudge.controls.budget import RedisBudget

    client = redis.asyncio.Redis.from_url(redis_url)
    return client, RedisBudget(client, daily_usd=daily_usd, prefix=prefix, **kwargs)


def _call(controls: CallControls, invoke):
    return controls.call(judge="coherence", version="v1", model=MODEL, messages=MESSAGES, parameters={},
                         values={"output": uuid.uuid4().hex}, invoke=invoke)


def test_invalid_replies_then_a_timeout_are_paid_and_the_unanswered_request_is_estimated(redis_url, prefix, fake_llm):
    fake_llm.reset()
    fake_llm.script("malformed", "malformed", "hang")

    async def scenario():
        client, budget = await _budget(redis_url, prefix, 1.0)
        llm = LLMClient(base_url=fake_llm.base_url, api_key="sk-test", timeout_seconds=0.5, max_attempts=3, backoff_initial=0.01, backoff_max=0.02)
        controls = CallControls(prices=PriceTable(), budget=budget)
        try:
            with pytest.raises(JudgeError) as caught:
                await _call(controls, lambda: llm.score(model=MODEL, messages=MESSAGES, judge="coherence"))
        finally:
            await llm.aclose()
            await client.aclose()
        return caught.value, controls.estimate_usd(MODEL, MESSAGES, {})

    error, estimate = asyncio.run(scenario())
    assert error.code == errors.TIMEOUT and error.attempts == 3
    served = fake_llm.stats()  # what the "provider" billed: two invalid replies
    paid = PriceTable().cost(MODEL, served["prompt_tokens"], served["completion_tokens"])
    assert served["prompt_tokens"] > 0 and error.tokens.prompt == served["prompt_tokens"]
    report = spend(redis_url, prefix)
    assert report.spent_usd == pytest.approx(paid + estimate, abs=2e-9)  # + the request that never got a reply
    assert report.reserved_usd == 0 and report.in_flight == 0


def test_a_call_sent_then_cancelled_is_settled_at_its_estimate(redis_url, prefix, fake_llm):
    fake_llm.reset()
    fake_llm.script("hang")

    async def scenario():
        client, budget = await _budget(redis_url, prefix, 1.0)
        llm = LLMClient(base_url=fake_llm.base_url, api_key="sk-test", timeout_seconds=60, max_attempts=1)
        controls = CallControls(prices=PriceTable(), budget=budget)
        task = asyncio.ensure_future(_call(controls, lambda: llm.score(model=MODEL, messages=MESSAGES, judge="coherence")))
        deadline = time.monotonic() + 30
        while not fake_llm.requests and time.monotonic() < deadline:  # until the request reached the server
            await asyncio.sleep(0.01)
        assert fake_llm.requests, "the request never reached the test server"
        task.cancel()  # the evaluation's deadline, or a cancelled task
        with pytest.raises(asyncio.CancelledError):
            await task
        await llm.aclose()
        await client.aclose()
        return controls.estimate_usd(MODEL, MESSAGES, {})

    estimate = asyncio.run(scenario())
    report = spend(redis_url, prefix)
    assert estimate > 0 and report.spent_usd == pytest.approx(estimate, abs=2e-9)
    assert report.reserved_usd == 0 and report.by_judge == {"coherence": pytest.approx(estimate, abs=2e-9)}


def test_a_call_waiting_past_its_lease_keeps_its_hold(redis_url, prefix):
    """A Retry-After or rate-limiter wait longer than the lease: the holder extends it, so the money stays held."""

    async def scenario():
        client, budget = await _budget(redis_url, prefix, 0.001, lease_seconds=0.3)
        controls = CallControls(prices=PriceTable(), budget=budget, reserve_output_tokens=200)
        waiting, done = asyncio.Event(), asyncio.Event()

        async def slow_call() -> LLMReply:
            waiting.set()
            await done.wait()
            return LLMReply(reply=JudgeReply(score=0.9, rationale="ok"), tokens=TokenUsage(prompt=100, completion=10), attempts=1, model=MODEL)

        call = asyncio.ensure_future(_call(controls, slow_call))
        await waiting.wait()
        held = spend(redis_url, prefix).reserved_usd
        await asyncio.sleep(1.0)  # three leases pass while the call waits
        other = await budget.reserve(model=MODEL, judge="relevance", usd=0.001 - held / 2)
        done.set()
        result = await call
        await client.aclose()
        return held, other, result

    held, other, result = asyncio.run(scenario())
    from tracejudge.judges.controls import Refusal

    assert held > 0 and isinstance(other, Refusal) and other.in_flight == 1
    assert result.cost_usd == pytest.approx(PriceTable().cost(MODEL, 100, 10))
    assert spend(redis_url, prefix).spent_usd == pytest.approx(result.cost_usd, abs=2e-9)


def test_a_refusal_says_spent_and_reserved_and_budget_shows_both(redis_url, prefix, monkeypatch, tmp_path, capsys):
    async def scenario():
        client, budget = await _budget(redis_url, prefix, 0.004)
        first = await budget.reserve(model=MODEL, judge="relevance", usd=0.001)
        await budget.settle(first, usd=0.0009)
        for _ in range(9):
            assert await budget.reserve(model=MODEL, judge="relevance", usd=0.0031 / 9)
        controls = CallControls(prices=PriceTable(), budget=budget)

        async def never() -> LLMReply:
            raise AssertionError("no call past the budget")

        with pytest.raises(JudgeError) as caught:
            await _call(controls, never)
        await client.aclose()
        return caught.value

    error = asyncio.run(scenario())
    assert error.code == errors.BUDGET_EXCEEDED
    assert "$0.0009 spent, $0.0031 reserved by 9 calls in flight of $0.004" in error.message

    from tracejudge.cli import main

    monkeypatch.setenv("TRACEJUDGE_REDIS_URL", redis_url)
    monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix)
    config = tmp_path / "budget.yaml"
    config.write_text(yaml.safe_dump({"observability": {"mlflow": {"judges": {"budget": {"daily_usd": 0.004}}}}}))
    assert main(["budget", "--config", str(config)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "$0.000900 spent, $0.003100 reserved by 9 call(s) in flight of $0.004" in out


def test_the_hold_is_sized_from_the_request():
    """Prompt tokens estimated from the request's text plus the reply's token cap (the judge's max_tokens)."""
    controls = CallControls(prices=PriceTable(), reserve_output_tokens=512)
    short = [{"role": "user", "content": "x" * 300}]
    long = [{"role": "user", "content": "x" * 30_000}]
    assert controls.estimate_usd(MODEL, long, {}) > 50 * controls.estimate_usd(MODEL, short, {"max_tokens": 1}) > 0
    assert controls.estimate_usd(MODEL, short, {"max_tokens": 2000}) - controls.estimate_usd(MODEL, short, {"max_tokens": 1000}) == pytest.approx(
        PriceTable().cost(MODEL, 0, 1000))
