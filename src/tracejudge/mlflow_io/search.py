"""Trace filters for pick-up and backfill: a time window and-ed with the user's ``search_traces`` filter.

The search itself is :meth:`tracejudge.mlflow_io.store.TraceStore.search_traces` (one page, a
refused filter is ``BadFilter``); experiments by id or name are :meth:`TraceStore.experiment_id`.
"""

from __future__ import annotations

from tracejudge.mlflow_io.store import BadFilter, UnknownExperiment

__all__ = ["BadFilter", "UnknownExperiment", "time_filter"]


def time_filter(
    *, since_ms: int | None = None, until_ms: int | None = None, extra: str | None = None, field: str = "timestamp_ms"
) -> str | None:
    """A ``search_traces`` filter for a time window, and-ed with the user's filter.

    ``field`` is what the window is on: the trace's start (``timestamp_ms``, backfill's ``--since``) or its
    end (``end_time_ms`` = start + execution time, which MLflow's SQL store computes in the query: pick-up).

    >>> time_filter(since_ms=1000, until_ms=2000, extra="tags.env = 'prod'")
    "trace.timestamp_ms >= 1000 AND trace.timestamp_ms <= 2000 AND tags.env = 'prod'"
    >>> time_filter(since_ms=1000, field="end_time_ms")
    'trace.end_time_ms >= 1000'
    """
    parts = []
    if since_ms is not None:
        parts.append(f"trace.{field} >= {int(since_ms)}")
    if until_ms is not None:
        parts.append(f"trace.{field} <= {int(until_ms)}")
    if extra and extra.strip():
        parts.append(extra.strip())
    return " AND ".join(parts) or None
