"""The one point every LLM judge call goes through: result cache, budget, cost.

:class:`CallControls` wraps a call to the model:

1. with a cache, a reply for the same (judge version, model, parameters,
   judged values) is reused: no call, ``cached=True`` and the key;
2. with a budget, the call's cost is reserved first, sized from the request
   (its prompt's estimated tokens + the reply's token cap); a refused
   reservation is :data:`errors.BUDGET_EXCEEDED` saying what is spent and what
   calls in flight hold, and no call is made; while the call runs, its lease is
   extended (rate-limiter waits, Retry-After, backoff are not bounded by a
   fixed lease);
3. however the call ends (a reply, an error, a timeout, a cancellation) the
   reservation is settled with what it cost (``judges.meter``): the tokens of
   every reply, plus the estimate for each request sent and never answered;
   the reply carries ``cost_usd``.

The budget and the cache are protocols: the Redis ones (shared by every
worker) live in ``tracejudge.tasks``; this module knows no Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tracejudge.judges import errors
from tracejudge.judges.client import LLMReply
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.meter import metering
from tracejudge.judges.model import JudgeReply, TokenUsage
from tracejudge.judges.pricing import PriceTable, estimate_prompt_tokens

log = logging.getLogger(__name__)

__all__ = ["Budget", "CallControls", "GuardedReply", "Refusal", "Reservation", "ResultCache", "cache_key"]

DEFAULT_RESERVE_OUTPUT_TOKENS = 512


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused: what is spent and what calls in flight hold, of the limit."""

    spent_usd: float
    reserved_usd: float
    in_flight: int
    limit_usd: float
    day: str = ""

    def describe(self) -> str:
        """``$0.0009 spent, $0.0031 reserved by 9 calls in flight of $0.004 (UTC day 2026-12-05)``.

        >>> Refusal(0.0009, 0.0031, 9, 0.004, "2026-12-05").describe()
        '$0.0009 spent, $0.0031 reserved by 9 calls in flight of $0.004 (UTC day 2026-12-05)'
        """
        calls = "call" if self.in_flight == 1 else "calls"
        day = f" (UTC day {self.day})" if self.day else ""
        return f"${self.spent_usd:.4g} spent, ${self.reserved_usd:.4g} reserved by {self.in_flight} {calls} in flight of ${self.limit_usd:g}{day}"


@dataclass(frozen=True)
class Reservation:
    """Money held for one call until it is settled."""

    id: str
    usd: float
    model: str
    judge: str


class Budget(Protocol):
    """A spend limit shared by every caller (see ``tracejudge.controls.budget.RedisBudget``)."""

    async def reserve(self, *, model: str, judge: str, usd: float) -> Reservation | Refusal | None:
        """Hold ``usd`` for a call; a :class:`Refusal` (or None) when that would go over the limit."""

    async def settle(self, reservation: Reservation, *, usd: float) -> None:
        """Release the hold and count the real cost."""

    def describe(self) -> str:
        """The limit and today's spend, for error messages."""


class ResultCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any]) -> None: ...


@dataclass
class GuardedReply:
    """A judge call's outcome with what it cost and whether it came from the cache."""

    reply: LLMReply
    cost_usd: float | None
    cached: bool = False
    cache_key: str | None = None


def cache_key(*, judge: str, version: str, model: str, parameters: dict[str, Any], values: dict[str, str]) -> str:
    """The key two calls share when they would send the model the same thing.

    >>> a = cache_key(judge="coherence", version="v1", model="gpt-4o-mini", parameters={}, values={"output": "hi"})
    >>> a == cache_key(judge="coherence", version="v1", model="gpt-4o-mini", parameters={}, values={"output": "hi"})
    True
    >>> a == cache_key(judge="coherence", version="v1", model="gpt-4o", parameters={}, values={"output": "hi"})
    False
    """
    blob = json.dumps([judge, version, model, parameters, values], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class CallControls:
    """Cache, budget and cost around each LLM judge call (one per process or evaluation).

    >>> controls = CallControls(prices=PriceTable())
    >>> controls.estimate_usd("gpt-4o-mini", [{"role": "user", "content": "x" * 3000}], {}) > 0
    True
    """

    def __init__(
        self,
        *,
        prices: PriceTable,
        budget: Budget | None = None,
        cache: ResultCache | None = None,
        reserve_output_tokens: int = DEFAULT_RESERVE_OUTPUT_TOKENS,
    ) -> None:
        self.prices = prices
        self.budget = budget
        self.cache = cache
        self.reserve_output_tokens = reserve_output_tokens
        self._unpriced_warned: set[str] = set()

    def estimate_usd(self, model: str, messages: list[dict[str, Any]], parameters: dict[str, Any]) -> float | None:
        """A high estimate of a call's cost (None without a price for the model)."""
        price = self.prices.price(model)
        if price is None:
            return None
        max_tokens = parameters.get("max_tokens") or parameters.get("max_completion_tokens")
        output = int(max_tokens) if isinstance(max_tokens, (int, float)) and max_tokens > 0 else self.reserve_output_tokens
        return price.cost(estimate_prompt_tokens(messages), output)

    async def call(
        self,
        *,
        judge: str,
        version: str,
        model: str,
        messages: list[dict[str, Any]],
        parameters: dict[str, Any],
        values: dict[str, str],
        invoke: Callable[[], Awaitable[LLMReply]],
    ) -> GuardedReply:
        """Run ``invoke`` (the LLM call) under the cache and the budget; see the module docstring."""
        key = None
        if self.cache is not None:
            key = cache_key(judge=judge, version=version, model=model, parameters=parameters, values=values)
            hit = await self.cache.get(key)
            if hit is not None:
                try:
                    reply = JudgeReply.model_validate(hit["reply"])
                    tokens = TokenUsage.model_validate(hit.get("tokens") or {})
                except (KeyError, TypeError, ValueError):
                    hit = None
                else:
                    return GuardedReply(
                        reply=LLMReply(reply=reply, tokens=tokens, attempts=0, model=model),
                        cost_usd=0.0 if self.prices.price(model) is not None else None,
                        cached=True,
                        cache_key=key,
                    )
        reservation: Reservation | None = None
        estimate: float | None = None
        if self.budget is not None:
            estimate = self.estimate_usd(model, messages, parameters)
            if estimate is None:
                if model not in self._unpriced_warned:
                    self._unpriced_warned.add(model)
                    log.warning("model %r has no price (judges.pricing): its calls are not counted against the budget", model)
            else:
                held = await self.budget.reserve(model=model, judge=judge, usd=estimate)
                if not isinstance(held, Reservation):
                    figures = held.describe() if isinstance(held, Refusal) else self.budget.describe()
                    raise JudgeError(
                        errors.BUDGET_EXCEEDED,
                        f"judge {judge!r} was not run: the daily judge budget cannot hold it ({figures}); "
                        f"this call needs up to ${estimate:.6f}",
                    )
                reservation = held
        if reservation is None:
            llm = await invoke()
        else:
            llm = await self._metered(reservation, model, estimate or 0.0, invoke)
        cost = self.prices.cost(model, llm.tokens.prompt, llm.tokens.completion)
        if self.cache is not None and key is not None:
            try:
                await self.cache.put(key, {"reply": llm.reply.model_dump(), "tokens": llm.tokens.model_dump()})
            except Exception as exc:  # a cache that cannot store costs a later call, nothing else
                log.warning("could not store judge reply in the cache: %s", exc)
        return GuardedReply(reply=llm, cost_usd=cost, cached=False, cache_key=key)

    async def _metered(self, reservation: Reservation, model: str, estimate: float, invoke: Callable[[], Awaitable[LLMReply]]) -> LLMReply:
        """Run the call holding its reservation (the lease renewed while it runs), then settle what it cost:
        the tokens of every reply, plus the estimate for each request sent but never answered (a timeout, the
        evaluation's deadline, a cancelled task), so a call that was sent is never settled at $0."""
        assert self.budget is not None
        renew = asyncio.ensure_future(self._keep_leased(reservation))
        paid: TokenUsage | None = None
        with metering() as meter:
            try:
                llm = await invoke()
                paid = llm.tokens
                return llm
            except JudgeError as exc:
                if isinstance(exc.tokens, TokenUsage):
                    paid = exc.tokens
                raise
            finally:
                renew.cancel()
                if paid is None or paid.prompt + paid.completion < meter.prompt + meter.completion:
                    paid = TokenUsage(prompt=meter.prompt, completion=meter.completion)
                usd = (self.prices.cost(model, paid.prompt, paid.completion) or 0.0) + meter.unanswered * estimate
                # settled even while this task is being cancelled: shielded, the settlement runs to its end
                await asyncio.shield(self.budget.settle(reservation, usd=usd))

    async def _keep_leased(self, reservation: Reservation) -> None:
        """Extend the reservation's lease while its call runs (rate-limiter waits, Retry-After, backoff), so a
        running call's money is never handed to another; a dead worker stops extending and its hold lapses."""
        extend = getattr(self.budget, "extend", None)
        if extend is None:
            return
        every = max(0.05, getattr(self.budget, "lease_seconds", 60.0) / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await extend(reservation)
            except Exception as exc:  # a missed renewal shortens the hold, nothing else
                log.warning("could not extend a budget reservation's lease: %s", exc)
