"""The shared rate limiter against a real Redis: GCRA slots and the 429 cool-down all workers see."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio

from tracejudge.tasks.ratelimit import RedisRateLimiter


def _run(coro):
    return asyncio.run(coro)


def _limiter(client, per_second):
    return RedisRateLimiter(client, endpoint="llm.test", per_second=per_second, prefix=f"t-{uuid.uuid4().hex[:8]}:")


def test_bucket_gives_a_burst_then_makes_callers_wait(redis_url):
    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_url)
        limiter = _limiter(client, per_second=4)
        key = f"{limiter.prefix}m:bucket"
        waits = [int(await limiter._script(keys=[key], args=[250, 4])) for _ in range(6)]
        await client.aclose()
        return waits

    waits = _run(scenario())
    assert waits[:4] == [0, 0, 0, 0]  # the burst
    assert all(w > 0 for w in waits[4:])  # then: wait before asking again


def _waits_of_the_call_after_a_burst(redis_url, per_second: float, burst: int) -> list[int]:
    """The waits Redis handed out while the call after ``burst`` calls got its slot."""

    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_url)
        limiter = _limiter(client, per_second=per_second)
        for _ in range(burst):
            await limiter.acquire("m")
        answers: list[int] = []
        script = limiter._script

        async def recording_script(*args, **kwargs):
            answer = int(await script(*args, **kwargs))
            answers.append(answer)
            return answer

        limiter._script = recording_script
        await limiter.acquire("m")  # returns only once Redis gave it a slot
        await client.aclose()
        return answers

    return _run(scenario())


def test_acquire_blocks_until_a_slot_is_free(redis_url):
    answers = _waits_of_the_call_after_a_burst(redis_url, per_second=5, burst=5)
    assert answers[0] > 0  # told to wait: the burst was used up
    assert answers[-1] == 0  # and then it got a slot
    assert len(answers) >= 2


def test_acquire_does_not_block_under_the_rate(redis_url):
    # the same scenario at 10,000/s: the burst is far from used up, so no wait
    assert _waits_of_the_call_after_a_burst(redis_url, per_second=10_000, burst=5) == [0]


def test_a_429_cool_down_is_seen_by_another_worker(redis_url):
    async def scenario():
        client_a = redis.asyncio.Redis.from_url(redis_url)
        client_b = redis.asyncio.Redis.from_url(redis_url)
        prefix = f"t-{uuid.uuid4().hex[:8]}:"
        worker_a = RedisRateLimiter(client_a, endpoint="llm.test", per_second=None, prefix=prefix)
        worker_b = RedisRateLimiter(client_b, endpoint="llm.test", per_second=None, prefix=prefix)
        await worker_a.cool_down("m", 0.3)
        key = f"{worker_b.prefix}m:cooldown"
        before = await client_b.pttl(key)
        await worker_b.acquire("m")
        after = await client_b.pttl(key)
        await client_a.aclose()
        await client_b.aclose()
        return before, after

    before, after = _run(scenario())
    assert before > 0  # B saw A's cool-down...
    assert after < 0  # ...and only got its slot once it had expired


@pytest.mark.parametrize("rate", [0, -1, float("inf")])
def test_config_refuses_bad_rates(rate):
    from tracejudge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="rate_limit_per_second"):
        load_config({"observability": {"mlflow": {"judges": {"execution": {"rate_limit_per_second": rate}}}}})
