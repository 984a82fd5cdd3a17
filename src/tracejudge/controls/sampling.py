"""Which traces are judged: the sampling decision and the trace filters.

The decision is a hash of the trace id against the rate, so every producer,
worker and retry decides the same for one trace, and a trace sampled at 10%
is also sampled at 20% (its point is below both). ``enqueue`` applies the
rate (no MLflow call); workers apply the filters, which need the trace, and
the per-judge rates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from tracejudge.config import FiltersConfig, TraceJudgeConfig

__all__ = ["filter_reason", "judge_sampled", "sample_point", "sampled", "sampling_decision"]

_SCALE = float(2**64)


def sample_point(trace_id: str, salt: str = "") -> float:
    """The trace's fixed point in [0, 1): sampled when below the rate.

    >>> sample_point("tr-1") == sample_point("tr-1")
    True
    """
    digest = hashlib.sha256(f"{salt}{trace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def sampled(trace_id: str, rate: float) -> bool:
    """Whether a trace is judged at ``rate`` (0..1); monotone in the rate.

    >>> sampled("tr-1", 1.0), sampled("tr-1", 0.0)
    (True, False)
    >>> all(sampled(t, 0.2) for t in map(str, range(500)) if sampled(t, 0.1))
    True
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return sample_point(trace_id) < rate


def sampling_decision(trace_id: str, config: TraceJudgeConfig, *, gate: bool = False, sample: float | None = None) -> str | None:
    """Why sampling leaves this trace out, or None when it is judged (``sample`` replaces the rate).

    >>> cfg = TraceJudgeConfig.model_validate({"judges": {"sampling": {"rate": 0.0}}})
    >>> sampling_decision("tr-1", cfg), sampling_decision("tr-1", cfg, gate=True)
    ('sampled out (judges.sampling.rate 0)', None)
    """
    sampling = config.judges.sampling
    rate = sampling.rate if sample is None else sample
    if rate >= 1.0 or (gate and sampling.gates_always):
        return None
    if sampled(trace_id, rate):
        return None
    return f"sampled out (judges.sampling.rate {rate:g})"


def judge_sampled(trace_id: str, judge: str, rate: float) -> bool:
    """Whether ``judge`` runs on a sampled trace at its own rate (independent of the trace's point)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return sample_point(trace_id, salt=f"{judge}|") < rate


def filter_reason(filters: FiltersConfig, *, workflow: str | None, tags: Mapping[str, str], state: str | None) -> str | None:
    """Why a trace is filtered out, or None when it is judged.

    >>> f = FiltersConfig(workflows=["article_writer"], tags={"env": "prod"}, status=["OK"])
    >>> filter_reason(f, workflow="article_writer", tags={"env": "prod"}, state="OK") is None
    True
    >>> filter_reason(f, workflow="article_writer", tags={"env": "dev"}, state="OK")
    "tag env is 'dev', the filter wants 'prod'"
    """
    if filters.workflows and (workflow or "") not in filters.workflows:
        return f"workflow {workflow!r} is not in filters.workflows ({', '.join(filters.workflows)})"
    for key, wanted in filters.tags.items():
        have = tags.get(key)
        if have != wanted:
            return f"tag {key} is {have!r}, the filter wants {wanted!r}" if have is not None else f"tag {key} is missing"
    if filters.status:
        normalized = (state or "").rsplit(".", 1)[-1].upper()
        if normalized not in filters.status:
            return f"trace state {normalized or 'unknown'} is not in filters.status ({', '.join(filters.status)})"
    return None
