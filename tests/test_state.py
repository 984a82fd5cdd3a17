"""Fast unit tests of the Redis-side logic (lock, result cache, counters, watermarks, seen traces, limiter).

fakeredis (with Lua), because the point here is our logic, not Redis; the promises about a real Redis
(restarts, TLS, several worker processes) keep their real-Redis tests.
"""

from __future__ import annotations

import asyncio
import threading
import time

import fakeredis
import pytest

from tracejudge.judges.model import JudgeResult
from tracejudge.tasks import state as state_module
from tracejudge.tasks.state import EvaluationBusy, NoRedisState, RedisState


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def state(server):
    return RedisState(fakeredis.FakeRedis(server=server), prefix="t1:",
                      async_factory=lambda: fakeredis.FakeAsyncRedis(server=server))


def result(key: str, score: float = 0.9) -> JudgeResult:
    return JudgeResult(name="coherence", target="workflow", score=score, threshold=0.5, passed=score >= 0.5, key=key)


def test_every_key_is_under_the_prefix(state, server):
    state.cache_results([result("k1")])
    state.counters.incr("judge_calls")
    state.watermarks.set("pickup", "1732780800000")
    state.seen.add("tr-1", ttl_seconds=60)
    with state.trace_lock("tr-1", timeout=1):
        keys = {k.decode() for k in fakeredis.FakeRedis(server=server).keys("*")}
    assert keys == {
        "t1:tracejudge:result:k1",
        "t1:tracejudge:count:judge_calls",
        "t1:tracejudge:mark:pickup",
        "t1:tracejudge:seen:tr-1",
        "t1:tracejudge:lock:tr-1",
    }


def test_two_prefixes_share_a_redis_without_seeing_each_other(server):
    a = RedisState(fakeredis.FakeRedis(server=server), prefix="a:")
    b = RedisState(fakeredis.FakeRedis(server=server), prefix="b:")
    a.cache_results([result("k")])
    a.counters.incr("n", 5)
    assert b.cached_results(["k"]) == {}
    assert b.counters.get("n") == 0


def test_result_cache_round_trip_and_forget(state):
    state.cache_results([result("k1", 0.4), result("k2", 0.8)])
    found = state.cached_results(["k1", "k2", "k3"])
    assert {k: r.score for k, r in found.items()} == {"k1": 0.4, "k2": 0.8}
    assert state.redis.ttl(state.key("result:k1")) == state_module.CACHE_TTL_SECONDS
    state.forget_results(["k1"])
    assert set(state.cached_results(["k1", "k2"])) == {"k2"}


def test_lock_makes_a_second_holder_wait_then_say_it_waited(state):
    order = []
    entered = threading.Event()

    def first():
        with state.trace_lock("tr-1", timeout=5) as held:
            order.append(("first", held.waited))
            entered.set()
            time.sleep(0.3)
            order.append(("first done", None))

    t = threading.Thread(target=first)
    t.start()
    entered.wait(5)
    with state.trace_lock("tr-1", timeout=5) as held:
        order.append(("second", held.waited))
    t.join()
    assert order == [("first", False), ("first done", None), ("second", True)]


def test_lock_held_too_long_is_evaluation_busy(state):
    with state.trace_lock("tr-1", timeout=5):
        with pytest.raises(EvaluationBusy, match="tr-1"):
            with state.trace_lock("tr-1", timeout=0.2):
                pass


def test_other_traces_are_not_blocked(state):
    with state.trace_lock("tr-1", timeout=5):
        with state.trace_lock("tr-2", timeout=0.2) as held:
            assert held.waited is False


def test_a_lock_lost_while_held_is_noticed(state, monkeypatch):
    monkeypatch.setattr(state_module, "LOCK_TTL_SECONDS", 0.4)  # renewed every 0.1 s
    with state.trace_lock("tr-1", timeout=5) as held:
        state.redis.delete(state.key("lock:tr-1"))  # expired, or taken over
        assert held.lost.wait(2), "the renewer did not notice the lost lock"


def test_a_lock_that_is_renewed_outlives_its_ttl(state, monkeypatch):
    monkeypatch.setattr(state_module, "LOCK_TTL_SECONDS", 0.4)
    with state.trace_lock("tr-1", timeout=5) as held:
        time.sleep(1.0)  # 2.5 TTLs
        assert state.redis.exists(state.key("lock:tr-1"))
        assert not held.lost.is_set()
    assert not state.redis.exists(state.key("lock:tr-1"))  # released


def test_counters(state):
    assert state.counters.incr("tokens:2026-11-28", 120, ttl_seconds=3600) == 120
    assert state.counters.incr("tokens:2026-11-28", 30, ttl_seconds=3600) == 150
    assert 0 < state.redis.ttl(state.counters.key("tokens:2026-11-28")) <= 3600
    assert state.counters.get_many(["tokens:2026-11-28", "nothing"]) == {"tokens:2026-11-28": 150, "nothing": 0}


def test_watermarks_and_seen_traces(state):
    assert state.watermarks.get("pickup:exp-1") is None
    state.watermarks.set("pickup:exp-1", "1732780800000")
    assert state.watermarks.get("pickup:exp-1") == "1732780800000"
    assert state.seen.add("tr-1", ttl_seconds=60) is True
    assert state.seen.add("tr-1", ttl_seconds=60) is False
    assert "tr-1" in state.seen and "tr-2" not in state.seen


def test_limiter_is_one_per_endpoint_and_rate_and_takes_a_burst(state):
    limiter = state.limiter("llm.test", 4)
    assert state.limiter("llm.test", 4) is limiter
    assert state.limiter("llm.test", 8) is not limiter

    async def slots():
        key = f"{limiter.prefix}m:bucket"
        return [int(await limiter._script(keys=[key], args=[250, 4])) for _ in range(6)]

    waits = asyncio.run(slots())
    assert waits[:4] == [0, 0, 0, 0] and all(w > 0 for w in waits[4:])


def test_no_redis_state_is_a_harmless_stand_in():
    state = NoRedisState()
    with state.trace_lock("tr-1", timeout=1) as held:
        assert held.waited is False
    state.cache_results([result("k")])
    assert state.cached_results(["k"]) == {}
    assert state.limiter("llm.test", 5) is None
