"""Production controls, the pure and Redis-side logic: config errors, sampling, pricing, budget, cache.

Redis-side logic runs against the real test Redis under a random key prefix.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tracejudge.config import ConfigError, load_config
from tracejudge.judges import errors
from tracejudge.judges.client import LLMReply
from tracejudge.judges.controls import CallControls
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.model import JudgeReply, TokenUsage
from tracejudge.judges.pricing import BUILTIN_PRICES_DATE, PriceTable
from tracejudge.controls.sampling import filter_reason, judge_sampled, sample_point, sampled, sampling_decision


def _judges(section: dict) -> dict:
    return {"observability": {"mlflow": {"judges": section}}}


# ---------------------------------------------------------------- bad input names the key

@pytest.mark.parametrize(
    "section, path, words",
    [
        ({"sampling": {"rate": 1.5}}, "observability.mlflow.judges.sampling.rate", "from 0 to 1"),
        ({"sampling": {"rate": -0.1}}, "observability.mlflow.judges.sampling.rate", "from 0 to 1"),
        ({"sampling": {"judges": {"groundedness": 3}}}, "observability.mlflow.judges.sampling.judges.groundedness", "from 0 to 1"),
        ({"budget": {"daily_usd": -5}}, "observability.mlflow.judges.budget.daily_usd", "0 or more"),
        ({"pricing": {"gpt-4o-mini": {"input": 0.15}}}, "observability.mlflow.judges.pricing.gpt-4o-mini.output", "is required"),
        ({"pricing": {"my-model": {"output": 1}}}, "observability.mlflow.judges.pricing.my-model.input", "is required"),
        ({"budget": {"on_exceed": "drop"}}, "observability.mlflow.judges.budget.on_exceed", "skip, defer"),
        ({"filters": {"status": ["DONE"]}}, "observability.mlflow.judges.filters.status[0]", "OK, ERROR"),
        ({"cache": {"ttl_hours": 0}}, "observability.mlflow.judges.cache.ttl_hours", "greater than 0"),
        ({"online": {"interval_seconds": 0}}, "observability.mlflow.judges.online.interval_seconds", "greater than 0"),
    ],
)
def test_bad_control_settings_name_the_key(section, path, words):
    with pytest.raises(ConfigError) as caught:
        load_config(_judges(section))
    assert caught.value.path == path
    assert words in caught.value.problem


def test_controls_config_reads_the_issue_layout():
    config = load_config(
        _judges(
            {
                "sampling": {"rate": 0.25, "gates_always": True, "judges": {"groundedness": 0.1}},
                "filters": {"workflows": ["article_writer"], "tags": {"env": "prod"}, "status": ["OK"]},
                "online": {"experiments": ["1", "article-writer"], "interval_seconds": 30, "delay_seconds": 30,
                           "filter_string": "tags.env = 'prod'"},
                "pricing": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}},
                "budget": {"daily_usd": 20.0, "on_exceed": "skip"},
                "cache": {"enabled": True, "ttl_hours": 24},
            }
        )
    )
    judges = config.judges
    assert judges.sampling.rate == 0.25 and judges.sampling.judges == {"groundedness": 0.1}
    assert judges.filters.tags == {"env": "prod"} and judges.online.experiments == ["1", "article-writer"]
    assert judges.pricing["gpt-4o-mini"].output == 0.60 and judges.budget.daily_usd == 20.0
    assert judges.cache.enabled and not load_config({}).judges.cache.enabled  # off by default


# ---------------------------------------------------------------- sampling

def test_sampling_is_deterministic_and_nested():
    ids = [f"tr-{uuid.uuid4().hex}" for _ in range(3000)]
    at10 = {t for t in ids if sampled(t, 0.10)}
    at20 = {t for t in ids if sampled(t, 0.20)}
    assert at10 <= at20  # sampled at 10% -> also at 20%
    assert at10 == {t for t in ids if sampled(t, 0.10)}  # same answer every time
    assert 0.07 < len(at10) / len(ids) < 0.13 and 0.16 < len(at20) / len(ids) < 0.24
    assert all(0.0 <= sample_point(t) < 1.0 for t in ids[:50])


def test_sampling_rate_over_2000_ids_is_close_to_the_rate():
    ids = [f"tr-{i:032x}" for i in range(2000)]  # fixed ids: the figure is reproducible
    share = sum(sampled(t, 0.25) for t in ids) / len(ids)
    # binomial standard deviation at n=2000, p=0.25 is 0.0097; 4 sigma
    assert abs(share - 0.25) < 0.039, share


def test_gates_are_not_sampled_out_unless_configured():
    config = load_config(_judges({"sampling": {"rate": 0.0}}))
    assert sampling_decision("tr-x", config) is not None
    assert sampling_decision("tr-x", config, gate=True) is None
    strict = load_config(_judges({"sampling": {"rate": 0.0, "gates_always": False}}))
    assert sampling_decision("tr-x", strict, gate=True) is not None
    assert sampling_decision("tr-x", config, sample=1.0) is None  # a per-call rate replaces the config's


def test_judge_rates_are_independent_of_the_trace_rate():
    ids = [f"tr-{i}" for i in range(2000)]
    share = sum(judge_sampled(t, "groundedness", 0.1) for t in ids) / len(ids)
    assert 0.07 < share < 0.13
    assert [judge_sampled(t, "groundedness", 0.1) for t in ids[:100]] != [sampled(t, 0.1) for t in ids[:100]]


def test_filters_say_why_a_trace_is_left_out():
    config = load_config(_judges({"filters": {"workflows": ["article_writer"], "tags": {"env": "prod"}, "status": ["OK"]}}))
    f = config.judges.filters
    assert filter_reason(f, workflow="article_writer", tags={"env": "prod"}, state="OK") is None
    assert "workflow 'qa'" in filter_reason(f, workflow="qa", tags={"env": "prod"}, state="OK")
    assert "tag env is missing" == filter_reason(f, workflow="article_writer", tags={}, state="OK")
    assert "ERROR" in filter_reason(f, workflow="article_writer", tags={"env": "prod"}, state="TraceState.ERROR")
    assert filter_reason(load_config({}).judges.filters, workflow="x", tags={}, state="ERROR") is None  # no filters


# ---------------------------------------------------------------- pricing

def test_price_table_has_dated_builtins_and_config_overrides():
    assert BUILTIN_PRICES_DATE[:4].isdigit()
    table = PriceTable({"gpt-4o-mini": {"input": 1.0, "output": 2.0}, "local-llama": {"input": 0, "output": 0}})
    assert table.cost("openai:/gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost("local-llama", 10, 10) == 0.0
    assert PriceTable().cost("no-such-model", 10, 10) is None


# ---------------------------------------------------------------- budget (real Redis)

def _run(coro):
    return asyncio.run(coro)


@pytest.fixture()
def prefix() -> str:
    return f"tjunit-{uuid.uuid4().hex[:8]}:"


def test_budget_reserves_settles_and_refuses_past_the_limit(redis_url, prefix):
    import redis as redis_lib
    import redis.asyncio

    from tracejudge.controls.budget import RedisBudget, read_spend
    from tracejudge.judges.controls import Refusal

    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_url)
        budget = RedisBudget(client, daily_usd=0.001, prefix=prefix)
        held = []
        while True:
            reservation = await budget.reserve(model="gpt-4o-mini", judge="coherence", usd=0.0003)
            if isinstance(reservation, Refusal):
                break
            held.append(reservation)
        assert len(held) == 3  # 3 x 0.0003 fits in 0.001, a 4th does not
        for r in held:
            await budget.settle(r, usd=0.0001)  # real cost below the estimate: the rest is released
        again = await budget.reserve(model="gpt-4o-mini", judge="relevance", usd=0.0006)
        assert not isinstance(again, Refusal)
        await budget.settle(again, usd=0.0006)
        assert isinstance(await budget.reserve(model="gpt-4o-mini", judge="relevance", usd=0.0002), Refusal)
        await client.aclose()

    _run(scenario())
    report = read_spend(redis_lib.Redis.from_url(redis_url), prefix=prefix)
    assert report.spent_usd == pytest.approx(0.0009)
    assert report.reserved_usd == 0
    assert report.by_judge == {"coherence": pytest.approx(0.0003), "relevance": pytest.approx(0.0006)}
    assert report.calls_by_model == {"gpt-4o-mini": 4}


def test_budget_drops_a_dead_holders_reservation_after_its_lease(redis_url, prefix):
    import redis.asyncio

    from tracejudge.controls.budget import RedisBudget
    from tracejudge.judges.controls import Refusal

    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_url)
        budget = RedisBudget(client, daily_usd=0.001, prefix=prefix, lease_seconds=0.2)
        assert await budget.reserve(model="m", judge="j", usd=0.001) is not None  # never settled (holder died)
        assert isinstance(await budget.reserve(model="m", judge="j", usd=0.0005), Refusal)
        await asyncio.sleep(0.3)
        assert not isinstance(await budget.reserve(model="m", judge="j", usd=0.0005), Refusal)
        await client.aclose()

    _run(scenario())


# ---------------------------------------------------------------- the call point: cache, budget, cost

class _RefusingBudget:
    async def reserve(self, **_):
        return None

    async def settle(self, *_, **__):
        raise AssertionError("nothing to settle")

    def describe(self):
        return "limit $0 per UTC day"


class _DictCache:
    def __init__(self):
        self.data = {}

    async def get(self, key):
        return self.data.get(key)

    async def put(self, key, value):
        self.data[key] = value


def _reply(score=0.9):
    return LLMReply(reply=JudgeReply(score=score, rationale="ok"), tokens=TokenUsage(prompt=1000, completion=100), attempts=1, model="gpt-4o-mini")


def test_a_refused_budget_makes_no_call_and_is_budget_exceeded():
    calls = []

    async def invoke():
        calls.append(1)
        return _reply()

    controls = CallControls(prices=PriceTable(), budget=_RefusingBudget())
    with pytest.raises(JudgeError) as caught:
        _run(controls.call(judge="coherence", version="v", model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                           parameters={}, values={"output": "x"}, invoke=invoke))
    assert caught.value.code == errors.BUDGET_EXCEEDED and calls == []


def test_cache_shares_one_call_and_says_cached_with_the_key():
    calls = []

    async def invoke():
        calls.append(1)
        return _reply()

    controls = CallControls(prices=PriceTable(), cache=_DictCache())
    kwargs = dict(judge="coherence", version="v", model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                  parameters={}, values={"output": "same answer"}, invoke=invoke)
    first = _run(controls.call(**kwargs))
    second = _run(controls.call(**kwargs))
    other = _run(controls.call(**{**kwargs, "values": {"output": "another answer"}}))
    assert len(calls) == 2
    assert not first.cached and first.cost_usd == pytest.approx(0.00021)
    assert second.cached and second.cache_key == first.cache_key and second.cost_usd == 0.0
    assert second.reply.reply.score == first.reply.reply.score and not other.cached


def test_enqueue_refuses_a_sample_rate_outside_0_1():
    import tracejudge

    with pytest.raises(ValueError) as caught:
        tracejudge.enqueue("tr-1", sample=1.5)
    assert "sample" in str(caught.value) and "from 0 to 1" in str(caught.value)
