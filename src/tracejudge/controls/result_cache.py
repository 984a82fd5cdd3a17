"""The judge result cache in Redis: one LLM call for identical judge requests.

Keyed by :func:`tracejudge.judges.controls.cache_key` (judge version, model,
parameters and the judged text), so retries of a node, re-runs of a
workflow and the same answer judged on several traces share a reply. Off
unless ``judges.cache.enabled``; hits and misses are counted per day.
"""

from __future__ import annotations

import json
from typing import Any

from tracejudge.controls import counters

CACHE_PREFIX = "tracejudge:judgecache:"


class RedisResultCache:
    """:class:`~tracejudge.judges.controls.ResultCache` over an asyncio Redis client."""

    def __init__(self, redis: Any, *, ttl_seconds: float, prefix: str = "") -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl_seconds))
        self.prefix = prefix

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{self.prefix}{CACHE_PREFIX}{key}")
        await counters.add_async(self.redis, self.prefix, {(None, counters.CACHE_HIT if raw else counters.CACHE_MISS): 1})
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def put(self, key: str, value: dict[str, Any]) -> None:
        await self.redis.set(f"{self.prefix}{CACHE_PREFIX}{key}", json.dumps(value), ex=self.ttl)
