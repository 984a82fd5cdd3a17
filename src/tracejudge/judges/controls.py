"""The one point every LLM judge call goes through: result cache, budget, cost.

:class:`CallControls` wraps a call to the model:

1. with a cache, a reply for the same (judge version, model, parameters,
   judged values) is reused: no call, ``cached=True`` and the key;
2. with a budget, the call's cost is reserved first from a high token
   estimate; a refused reservation is :data:`errors.BUDGET_EXCEEDED`, and no
   call is made;
3. after the call (or a failure that was billed) the reservation is settled
   with the real cost, and the reply carries ``cost_usd``.

The budget and the cache are protocols: the Redis ones (shared by every
worker) live in ``tracejudge.tasks``; this module knows no Redis.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tracejudge.judges import errors
from tracejudge.judges.client import LLMReply
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.model import JudgeReply, TokenUsage
from tracejudge.judges.pricing import PriceTable, estimate_prompt_tokens

log = logging.getLogger(__name__)

__all__ = ["Budget", "CallControls", "GuardedReply", "Reservation", "ResultCache", "cache_key"]

DEFAULT_RESERVE_OUTPUT_TOKENS = 512


@dataclass(frozen=True)
class Reservation:
    """Money held for one call until it is settled."""

    id: str
    usd: float
    model: str
    judge: str


class Budget(Protocol):
    """A spend limit shared by every caller (see ``tracejudge.controls.budget.RedisBudget``)."""

    async def reserve(self, *, model: str, judge: str, usd: float) -> Reservation | None:
        """Hold ``usd`` for a call; None when that would go over the limit."""

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
        reservation = None
        if self.budget is not None:
            estimate = self.estimate_usd(model, messages, parameters)
            if estimate is None:
                if model not in self._unpriced_warned:
                    self._unpriced_warned.add(model)
                    log.warning("model %r has no price (judges.pricing): its calls are not counted against the budget", model)
            else:
                reservation = await self.budget.reserve(model=model, judge=judge, usd=estimate)
                if reservation is None:
                    raise JudgeError(
                        errors.BUDGET_EXCEEDED,
                        f"judge {judge!r} was not run: the daily judge budget is spent ({self.budget.describe()}); "
                        f"this call needed up to ${estimate:.6f}",
                    )
        try:
            llm = await invoke()
        except JudgeError as exc:
            tokens = exc.tokens if isinstance(exc.tokens, TokenUsage) else TokenUsage()
            if reservation is not None:
                await self._settle(reservation, self.prices.cost(model, tokens.prompt, tokens.completion) or 0.0)
            raise
        except BaseException:
            if reservation is not None:
                await self._settle(reservation, 0.0)
            raise
        cost = self.prices.cost(model, llm.tokens.prompt, llm.tokens.completion)
        if reservation is not None:
            await self._settle(reservation, cost or 0.0)
        if self.cache is not None and key is not None:
            try:
                await self.cache.put(key, {"reply": llm.reply.model_dump(), "tokens": llm.tokens.model_dump()})
            except Exception as exc:  # a cache that cannot store costs a later call, nothing else
                log.warning("could not store judge reply in the cache: %s", exc)
        return GuardedReply(reply=llm, cost_usd=cost, cached=False, cache_key=key)

    async def _settle(self, reservation: Reservation, usd: float) -> None:
        assert self.budget is not None
        await self.budget.settle(reservation, usd=usd)
