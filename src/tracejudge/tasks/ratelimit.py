"""A rate limit per LLM endpoint and model, shared by every worker through Redis.

Celery's ``rate_limit`` is per worker and under-delivers (measured: '10/s'
gave 1-2/s), so judge calls take slots from a GCRA bucket kept in Redis
(one Lua call per slot, Redis's clock, so workers on any machine agree).
A 429 from the provider sets a cool-down key that every worker waits out,
so one caller's Retry-After slows everyone down, not just the caller.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

log = logging.getLogger(__name__)

KEY_PREFIX = "tracejudge:rate:"
MAX_SLEEP_SECONDS = 5.0
#: Slots handed out at once: a quarter second's worth, not a whole second's. A provider that allows
#: the same rate keeps (1 - 0.25) s of its own burst in hand, so calls that reach it early or late
#: (network and scheduling jitter) are not refused; with a full second's burst on both sides every
#: call arrives at the provider's edge, and 4 % of them got 429 at the configured rate (measured,
#: tests/test_ratelimit_workers.py).
BURST_SECONDS = 0.25
#: How long a process trusts its last look at the cool-down key (saves a Redis call per judge call).
COOL_DOWN_CHECK_SECONDS = 0.25

#: GCRA: KEYS[1] = bucket, ARGV[1] = ms between calls, ARGV[2] = burst (calls).
#: Returns 0 when a slot was taken, else the ms to wait before asking again.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""


class RedisRateLimiter:
    """``acquire`` a slot before each LLM attempt; ``cool_down`` after a 429.

    >>> limiter = RedisRateLimiter(redis_async, endpoint="api.openai.com", per_second=5)  # doctest: +SKIP
    >>> await limiter.acquire("gpt-4o-mini")  # doctest: +SKIP
    """

    def __init__(self, redis: Any, *, endpoint: str, per_second: float | None, prefix: str = "") -> None:
        self.redis = redis
        self.endpoint = endpoint
        self.per_second = per_second
        self.prefix = f"{prefix}{KEY_PREFIX}{endpoint}:"
        self._script = redis.register_script(_GCRA)
        self._clear_until: dict[str, float] = {}  # model -> monotonic time until which no cool-down was seen

    async def acquire(self, model: str) -> None:
        # The cool-down is looked at again after every wait for a slot: calls queued behind the
        # bucket when a 429 arrived must not go on at the full rate (measured: they did, for the
        # whole Retry-After, before this loop re-checked it).
        while True:
            await self._wait_out_cool_down(model)
            if not self.per_second:
                return
            interval_ms = max(1, int(1000 / self.per_second))
            burst = max(1, math.ceil(self.per_second * BURST_SECONDS))
            wait_ms = int(await self._script(keys=[f"{self.prefix}{model}:bucket"], args=[interval_ms, burst]))
            if wait_ms <= 0:
                return
            await asyncio.sleep(min(wait_ms / 1000.0, MAX_SLEEP_SECONDS))

    async def cool_down(self, model: str, seconds: float) -> None:
        if seconds <= 0:
            return
        key = f"{self.prefix}{model}:cooldown"
        # keep the longer of an existing cool-down and this one
        current = await self.redis.pttl(key)
        self._clear_until.pop(model, None)
        if current is None or current < seconds * 1000:
            await self.redis.set(key, "1", px=max(1, int(seconds * 1000)))
            log.info("rate limited by %s for %s: all workers wait %.2f s", self.endpoint, model, seconds)

    async def _wait_out_cool_down(self, model: str) -> None:
        if time.monotonic() < self._clear_until.get(model, 0.0):
            return  # looked a moment ago: no cool-down
        key = f"{self.prefix}{model}:cooldown"
        while True:
            remaining = await self.redis.pttl(key)
            if remaining is None or remaining <= 0:
                self._clear_until[model] = time.monotonic() + COOL_DOWN_CHECK_SECONDS
                return
            await asyncio.sleep(min(remaining / 1000.0, MAX_SLEEP_SECONDS))
