"""The daily judge budget, shared by every worker through Redis.

Before each LLM call a worker reserves the call's estimated cost; one Lua
script checks ``spent + reserved + estimate <= limit`` and holds the amount,
so no number of workers together can start a call the budget cannot pay
for (a refusal says what is spent and what calls in flight hold). After the
call the reservation is settled with what it cost (and the spend counted by
model and by judge). The holder extends its lease while the call runs; a
reservation whose holder died is dropped when its lease ends. Amounts are
integers in nano-USD; days are UTC.

Keys (under ``TRACEJUDGE_KEY_PREFIX``), kept for 8 days::

    tracejudge:budget:<day>:spent        nano-USD settled
    tracejudge:budget:<day>:reserved     nano-USD held by calls in flight
    tracejudge:budget:<day>:holds        reservation id -> nano-USD
    tracejudge:budget:<day>:leases       reservation id, scored by lease end (ms)
    tracejudge:budget:<day>:by_model     model -> nano-USD    (and :calls_by_model)
    tracejudge:budget:<day>:by_judge     judge -> nano-USD    (and :calls_by_judge)
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel

from tracejudge.judges.controls import Refusal, Reservation

NANO = 1_000_000_000
KEY_TTL_SECONDS = 8 * 24 * 3600
DEFAULT_LEASE_SECONDS = 600.0

_RESERVE = """
local spent_k, reserved_k, holds_k, leases_k = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit, amount, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local lease_ms, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', leases_k, '-inf', now)
for _, old in ipairs(expired) do
  local held = tonumber(redis.call('HGET', holds_k, old) or '0')
  redis.call('DECRBY', reserved_k, held)
  redis.call('HDEL', holds_k, old)
  redis.call('ZREM', leases_k, old)
end
local spent = tonumber(redis.call('GET', spent_k) or '0')
local reserved = tonumber(redis.call('GET', reserved_k) or '0')
if spent + reserved + amount > limit then
  return {0, spent, reserved, redis.call('HLEN', holds_k)}
end
redis.call('INCRBY', reserved_k, amount)
redis.call('HSET', holds_k, id, amount)
redis.call('ZADD', leases_k, now + lease_ms, id)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
return {1}
"""

_SETTLE = """
local spent_k, reserved_k, holds_k, leases_k = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local by_model, by_judge, calls_model, calls_judge = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local id, actual, model, judge, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local held = redis.call('HGET', holds_k, id)
if held then
  redis.call('DECRBY', reserved_k, tonumber(held))
  redis.call('HDEL', holds_k, id)
  redis.call('ZREM', leases_k, id)
end
redis.call('INCRBY', spent_k, actual)
redis.call('HINCRBY', by_model, model, actual)
redis.call('HINCRBY', by_judge, judge, actual)
redis.call('HINCRBY', calls_model, model, 1)
redis.call('HINCRBY', calls_judge, judge, 1)
for i = 1, 8 do redis.call('EXPIRE', KEYS[i], ttl) end
return 1
"""


# a held reservation's lease moves to now + lease (XX: only while it is still held)
_EXTEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""


def utc_day(now: datetime | None = None) -> str:
    """Today's budget day (UTC), e.g. ``'2026-11-28'``."""
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")


def budget_keys(prefix: str, day: str) -> list[str]:
    base = f"{prefix}tracejudge:budget:{day}:"
    return [base + part for part in ("spent", "reserved", "holds", "leases", "by_model", "by_judge", "calls_by_model", "calls_by_judge")]


class SpendReport(BaseModel):
    """One day's judge spend: total, held by calls in flight, by model and by judge."""

    day: str
    limit_usd: float | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    in_flight: int = 0
    by_model: dict[str, float] = {}
    by_judge: dict[str, float] = {}
    calls_by_model: dict[str, int] = {}
    calls_by_judge: dict[str, int] = {}


class RedisBudget:
    """The :class:`~tracejudge.judges.controls.Budget` of all workers, in Redis (asyncio client).

    >>> budget = RedisBudget(redis_asyncio_client, daily_usd=20.0)  # doctest: +SKIP
    >>> reservation = await budget.reserve(model="gpt-4o-mini", judge="coherence", usd=0.0002)  # doctest: +SKIP
    """

    def __init__(self, redis: Any, *, daily_usd: float, prefix: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.redis = redis
        self.daily_usd = daily_usd
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._extend = redis.register_script(_EXTEND)
        self._last_day = utc_day()

    async def reserve(self, *, model: str, judge: str, usd: float) -> Reservation | Refusal:
        """Hold ``usd`` for the lease; a :class:`Refusal` with today's spent and reserved figures when it does not fit."""
        day = self._last_day = utc_day()
        rid = f"{day}/{uuid.uuid4().hex}"
        amount = max(1, int(round(usd * NANO)))
        answer = await self._reserve(
            keys=budget_keys(self.prefix, day)[:4],
            args=[int(round(self.daily_usd * NANO)), amount, rid, self.lease_ms, KEY_TTL_SECONDS],
        )
        if int(answer[0]) == 1:
            return Reservation(id=rid, usd=amount / NANO, model=model, judge=judge)
        return Refusal(spent_usd=int(answer[1]) / NANO, reserved_usd=int(answer[2]) / NANO, in_flight=int(answer[3]),
                       limit_usd=self.daily_usd, day=day)

    async def extend(self, reservation: Reservation) -> bool:
        """Move a held reservation's lease to a full lease from now (False: it is no longer held)."""
        day = reservation.id.split("/", 1)[0]
        return bool(await self._extend(keys=[budget_keys(self.prefix, day)[3]], args=[reservation.id, self.lease_ms]))

    async def settle(self, reservation: Reservation, *, usd: float) -> None:
        day = reservation.id.split("/", 1)[0]
        await self._settle(
            keys=budget_keys(self.prefix, day),
            args=[reservation.id, int(round(usd * NANO)), reservation.model, reservation.judge, KEY_TTL_SECONDS],
        )

    def describe(self) -> str:
        return f"limit ${self.daily_usd:g} per UTC day, day {self._last_day}"


def read_spend(redis: Any, *, prefix: str = "", day: str | None = None, limit_usd: float | None = None) -> SpendReport:
    """One day's spend from Redis (sync client), for ``tracejudge budget`` and monitoring."""
    day = day or utc_day()
    keys = budget_keys(prefix, day)
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys[0])
    pipe.get(keys[1])
    pipe.hlen(keys[2])
    for key in keys[4:]:
        pipe.hgetall(key)
    spent, reserved, in_flight, by_model, by_judge, calls_model, calls_judge = pipe.execute()

    def usd(mapping: dict[Any, Any]) -> dict[str, float]:
        return {_text(k): int(v) / NANO for k, v in sorted(mapping.items())}

    def count(mapping: dict[Any, Any]) -> dict[str, int]:
        return {_text(k): int(v) for k, v in sorted(mapping.items())}

    return SpendReport(
        day=day,
        limit_usd=limit_usd,
        spent_usd=int(spent or 0) / NANO,
        reserved_usd=int(reserved or 0) / NANO,
        in_flight=int(in_flight or 0),
        by_model=usd(by_model),
        by_judge=usd(by_judge),
        calls_by_model=count(calls_model),
        calls_by_judge=count(calls_judge),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
