"""Find traces in MLflow: experiments by id or name, and ``search_traces`` page by page.

Used by the online scan and by backfill. A filter MLflow refuses is
:class:`BadFilter` quoting MLflow's own message; an experiment that does not
exist is :class:`UnknownExperiment`; a store that does not answer is
:class:`~tracejudge.mlflow_io.reader.MlflowUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tracejudge.mlflow_io.writer import call_mlflow

DEFAULT_PAGE_SIZE = 200


class UnknownExperiment(LookupError):
    """No experiment has this id or name."""


class BadFilter(ValueError):
    """MLflow refused a ``filter_string``; the message quotes MLflow's error."""


@dataclass
class TracePage:
    traces: list[Any]
    next_token: str | None


def resolve_experiment(client: Any, ref: str, *, where: str = "experiment") -> str:
    """The id of the experiment with this id or name; :class:`UnknownExperiment` naming ``where`` if none."""
    from tracejudge.mlflow_io.query import ExperimentNotFound, resolve_experiment as resolve

    try:
        return resolve(client, str(ref).strip())
    except ExperimentNotFound:
        raise UnknownExperiment(f"{where}: unknown experiment {str(ref).strip()!r} (no experiment has this id or name)") from None


def time_filter(*, since_ms: int | None = None, until_ms: int | None = None, extra: str | None = None) -> str | None:
    """A ``search_traces`` filter for a time window, and-ed with the user's filter.

    >>> time_filter(since_ms=1000, until_ms=2000, extra="tags.env = 'prod'")
    "trace.timestamp_ms >= 1000 AND trace.timestamp_ms <= 2000 AND tags.env = 'prod'"
    """
    parts = []
    if since_ms is not None:
        parts.append(f"trace.timestamp_ms >= {int(since_ms)}")
    if until_ms is not None:
        parts.append(f"trace.timestamp_ms <= {int(until_ms)}")
    if extra and extra.strip():
        parts.append(extra.strip())
    return " AND ".join(parts) or None


def search_page(
    client: Any,
    experiment_id: str,
    *,
    filter_string: str | None,
    page_token: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    include_spans: bool = False,
) -> TracePage:
    """One page of traces, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        page = call_mlflow(
            client.search_traces,
            locations=[experiment_id],
            filter_string=filter_string,
            max_results=page_size,
            order_by=["timestamp_ms ASC"],
            page_token=page_token,
            include_spans=include_spans,
        )
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE" or "filter" in str(exc).lower():
            raise BadFilter(f"MLflow refused the filter {filter_string!r}: {exc.message if hasattr(exc, 'message') else exc}") from None
        raise
    token = getattr(page, "token", None) or None
    if isinstance(token, bytes):  # the SQL store's tokens are base64 bytes; keep text (JSON checkpoints)
        token = token.decode()
    return TracePage(traces=list(page), next_token=token)


def iter_pages(
    client: Any,
    experiment_id: str,
    *,
    filter_string: str | None,
    page_token: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Iterator[TracePage]:
    """Pages until the last; each page's ``next_token`` resumes after it."""
    while True:
        page = search_page(client, experiment_id, filter_string=filter_string, page_token=page_token, page_size=page_size)
        yield page
        if not page.next_token:
            return
        page_token = page.next_token


def check_filter(client: Any, experiment_id: str, filter_string: str | None) -> None:
    """Raise :class:`BadFilter` now if MLflow refuses ``filter_string`` (one tiny search)."""
    if filter_string:
        search_page(client, experiment_id, filter_string=filter_string, page_size=1)
