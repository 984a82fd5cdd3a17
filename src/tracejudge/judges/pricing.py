"""What a judge call costs: a price table (USD per 1M tokens) and token estimates.

A small built-in table covers well-known models; ``judges.pricing`` in the
YAML adds models or overrides prices. A model with no price has no cost
(``None``), never a made-up one. Token estimates (before the call) are
deliberately high, so a budget reserved from them is not overrun.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tracejudge.config import normalize_model

__all__ = ["BUILTIN_PRICES", "BUILTIN_PRICES_DATE", "Price", "PriceTable", "estimate_prompt_tokens"]

#: When the built-in prices below were read from the providers' public price pages.
BUILTIN_PRICES_DATE = "2025-06-01"
#: USD per 1M tokens (input, output), standard tier, as of BUILTIN_PRICES_DATE.
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}
#: Characters per token assumed when estimating (real English text is ~4; lower = a higher estimate).
CHARS_PER_TOKEN_ESTIMATE = 3.0
#: Tokens a chat request adds around its messages (roles, separators).
MESSAGE_OVERHEAD_TOKENS = 8


@dataclass(frozen=True)
class Price:
    """USD per 1M input and output tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call.

        >>> round(Price(0.15, 0.60).cost(1000, 100), 8)
        0.00021
        """
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class PriceTable:
    """Prices by model: the built-in table, overridden and extended by ``judges.pricing``.

    >>> table = PriceTable({"my-model": {"input": 1.0, "output": 2.0}})
    >>> table.cost("openai:/gpt-4o-mini", 1_000_000, 0), table.cost("my-model", 0, 500_000), table.cost("unknown", 5, 5)
    (0.15, 1.0, None)
    """

    def __init__(self, configured: Mapping[str, Any] | None = None, *, builtin: bool = True) -> None:
        self._prices: dict[str, Price] = {}
        if builtin:
            self._prices.update({m: Price(i, o) for m, (i, o) in BUILTIN_PRICES.items()})
        for model, entry in (configured or {}).items():
            inp = entry["input"] if isinstance(entry, Mapping) else entry.input
            out = entry["output"] if isinstance(entry, Mapping) else entry.output
            self._prices[_name(model)] = Price(float(inp), float(out))

    def price(self, model: str | None) -> Price | None:
        """The model's price, or None when it has none (then its calls have no cost)."""
        if not model:
            return None
        return self._prices.get(_name(model))

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for a call, or None when the model has no price."""
        price = self.price(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)

    def models(self) -> list[str]:
        return sorted(self._prices)


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A high estimate of a request's prompt tokens, from its characters.

    >>> estimate_prompt_tokens([{"role": "user", "content": "x" * 300}])
    117
    """
    chars = sum(len(json.dumps(m.get("content", ""), ensure_ascii=False)) for m in messages)
    return int(math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE)) + MESSAGE_OVERHEAD_TOKENS * (len(messages) + 1)


def _name(model: str) -> str:
    try:
        return normalize_model(model)
    except ValueError:
        return model.strip()
