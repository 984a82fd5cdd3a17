"""Production controls in the YAML: sampling, filters, pick-up, pricing, budget, cache.

They sit under ``observability.mlflow.judges`` beside ``execution``::

    sampling: {rate: 0.25, gates_always: true, judges: {groundedness: 0.1}}
    filters:  {workflows: [article_writer], tags: {env: prod}, status: [OK]}
    online:   {experiments: ["1"], interval_seconds: 30, delay_seconds: 30, filter_string: "tags.env = 'prod'"}
    pricing:  {gpt-4o-mini: {input: 0.15, output: 0.60}}     # USD per 1M tokens
    budget:   {daily_usd: 20.0, on_exceed: skip}
    cache:    {enabled: true, ttl_hours: 24}

Every value is checked here, so a rate of 1.5 or a negative budget is an
error naming its key before any worker runs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from .errors import FieldProblem, show
from .base import _AtLeastOne, _Count, _Number, _Seconds, _Section

__all__ = [
    "BudgetConfig",
    "CacheConfig",
    "FiltersConfig",
    "OnlineConfig",
    "PriceEntry",
    "SamplingConfig",
    "TRACE_STATES",
]

TRACE_STATES = ("OK", "ERROR", "IN_PROGRESS", "STATE_UNSPECIFIED")


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number from 0 to 1, the share of traces judged (got {show(value)})")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a number from 0 to 1, the share of traces judged (got {show(value)})")
    return float(value)


class SamplingConfig(_Section):
    """``judges.sampling``: the share of traces (and of each judge within them) that is judged.

    >>> SamplingConfig(rate=0.25, judges={"groundedness": 0.1}).judges
    {'groundedness': 0.1}
    """

    #: Share of traces judged, 0..1, chosen deterministically from the trace id.
    rate: float = 1.0
    #: Traces someone waits on (the gate queue) are always judged, whatever the rate.
    gates_always: bool = True
    #: Per-judge share, 0..1, within the sampled traces (e.g. an expensive judge on 10%).
    judges: dict[str, float] = Field(default_factory=dict)

    @field_validator("rate", mode="before")
    @classmethod
    def _check_rate(cls, value: Any) -> float:
        return _rate(value)

    @field_validator("judges", mode="before")
    @classmethod
    def _check_judges(cls, value: Any) -> dict[str, float]:
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of judge name to rate, like {{groundedness: 0.1}} (got {show(value)})")
        checked: dict[str, float] = {}
        for name, rate in value.items():
            if not isinstance(name, str) or not name.strip():
                raise FieldProblem(f"judge names must be non-empty text (got {show(name)})", loc=(str(name),))
            try:
                checked[name.strip()] = _rate(rate)
            except ValueError as exc:
                raise FieldProblem(str(exc), loc=(name,)) from None
        return checked


class FiltersConfig(_Section):
    """``judges.filters``: which traces are judged at all (applied by workers, which have the trace).

    Empty lists and mappings mean "any". ``status`` lists the trace states judged;
    when it is set, a trace in another state (say ``ERROR``) is skipped.

    >>> FiltersConfig(status=["ok"]).status
    ['OK']
    """

    #: Judge only traces of these workflows (the trace name).
    workflows: list[str] = Field(default_factory=list)
    #: Judge only traces with these tag values.
    tags: dict[str, str] = Field(default_factory=dict)
    #: Judge only traces in these states (OK, ERROR, IN_PROGRESS).
    status: list[str] = Field(default_factory=list)

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): (show(v) if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value

    @field_validator("status")
    @classmethod
    def _states(cls, value: list[str]) -> list[str]:
        out = []
        for index, state in enumerate(value):
            upper = state.strip().upper()
            if upper not in TRACE_STATES:
                raise FieldProblem(f"must be one of {', '.join(TRACE_STATES)} (got {show(state)})", loc=(index,))
            out.append(upper)
        return out

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(self.workflows or self.tags or self.status)


class OnlineConfig(_Section):
    """``judges.online``: experiments a beat task scans for new finished traces.

    >>> OnlineConfig(experiments=["1"]).interval_seconds
    30.0
    """

    #: Experiments (ids or names) the beat scans for new traces to judge (online pick-up).
    experiments: list[str] = Field(default_factory=list)
    #: Seconds between two scans.
    interval_seconds: _Seconds = 30.0
    #: How long after a trace ends it is picked up, so its spans are all written.
    delay_seconds: _Number = 30.0
    #: An MLflow search_traces filter that picked-up traces must also match.
    filter_string: str | None = None
    #: Most traces enqueued by one scan; the rest wait for the next.
    max_per_scan: _AtLeastOne = 1000

    @field_validator("experiments", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("experiments")
    @classmethod
    def _nonblank(cls, value: list[str]) -> list[str]:
        for index, name in enumerate(value):
            if not name.strip():
                raise FieldProblem("must be an experiment id or name (got an empty string)", loc=(index,))
        return [name.strip() for name in value]

    @field_validator("delay_seconds")
    @classmethod
    def _delay(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a number of seconds, 0 or more (got {show(value)})")
        return value


class PriceEntry(_Section):
    """One model's price, USD per 1M tokens: ``{input: 0.15, output: 0.60}``."""

    #: USD per 1M prompt tokens.
    input: _Number
    #: USD per 1M completion tokens.
    output: _Number

    @field_validator("input", "output")
    @classmethod
    def _price(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a price in USD per 1M tokens, 0 or more (got {show(value)})")
        return value


class BudgetConfig(_Section):
    """``judges.budget``: a daily (UTC) spend limit shared by all workers through Redis.

    >>> BudgetConfig(daily_usd=20).on_exceed
    'skip'
    """

    #: Daily (UTC) spend limit for judge calls, shared by all workers (none: no limit).
    daily_usd: _Number | None = None
    #: Over budget: `skip` the judge (a budget error result) or `defer` the evaluation to the next day.
    on_exceed: Literal["skip", "defer"] = "skip"
    #: Output tokens reserved for a call whose judge sets no ``max_tokens``.
    reserve_output_tokens: _Count = 512

    @field_validator("daily_usd")
    @classmethod
    def _non_negative(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"must be an amount in USD, 0 or more (got {show(value)})")
        return value

    @field_validator("reserve_output_tokens")
    @classmethod
    def _tokens(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a whole number of tokens, 1 or more (got {show(value)})")
        return value


class CacheConfig(_Section):
    """``judges.cache``: share one LLM call among identical (input, judge version, model, parameters).

    >>> CacheConfig().enabled
    False
    """

    #: Reuse a judge result for identical input, judge version, model and parameters.
    enabled: bool = False
    #: How long a cached result is reused.
    ttl_hours: _Number = 24.0

    @field_validator("ttl_hours")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"must be a number of hours greater than 0 (got {show(value)})")
        return value


def check_pricing(value: Any) -> dict[str, PriceEntry]:
    """``judges.pricing``: model name -> :class:`PriceEntry`, each error at its model's key."""
    if not isinstance(value, dict):
        raise ValueError(
            f"must be a mapping of model name to prices, like {{gpt-4o-mini: {{input: 0.15, output: 0.60}}}} (got {show(value)})"
        )
    out: dict[str, PriceEntry] = {}
    for model, entry in value.items():
        if not isinstance(model, str) or not model.strip():
            raise FieldProblem(f"model names must be non-empty text (got {show(model)})", loc=(str(model),))
        if isinstance(entry, PriceEntry):
            out[model.strip()] = entry
            continue
        if not isinstance(entry, dict):
            raise FieldProblem(
                f"must be a mapping {{input: USD per 1M input tokens, output: USD per 1M output tokens}} (got {show(entry)})",
                loc=(model,),
            )
        for side in ("input", "output"):
            if entry.get(side) is None:
                raise FieldProblem(
                    f"is required: the price in USD per 1M {side} tokens (the entry must have both input and output)",
                    loc=(model, side),
                )
        from pydantic import ValidationError

        try:
            out[model.strip()] = PriceEntry.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            cause = (first.get("ctx") or {}).get("error")
            message = str(cause) if cause is not None else first.get("msg", "invalid value")
            loc = tuple(str(p) for p in first.get("loc", ()))
            raise FieldProblem(message, loc=(model, *loc)) from None
    return out
