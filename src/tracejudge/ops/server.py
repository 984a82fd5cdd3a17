"""The worker's small HTTP server: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness).

One per worker (``TRACEJUDGE_METRICS_PORT``): in the worker process itself, or in the supervisor of
``tracejudge worker --processes N``, which sums its children's metrics (prometheus_client's multiprocess
files in ``PROMETHEUS_MULTIPROC_DIR``) and reads their health files. Besides what the processes
record (``ops/metrics.py``), a scrape reads a few gauges from Redis at that moment
(:class:`Readings`: queue depth and oldest message age, pick-up lag, budget left), so they are as
fresh as the scrape and cost nothing between scrapes.

``/healthz`` answers 200 while every check of ``live`` holds (the event loop runs, the process is not
frozen) and 503 otherwise, with one line per check; ``/readyz`` also asks ``ready`` (consumer started,
broker and tracking store reachable).

>>> server = MetricsServer(host="127.0.0.1", port=0, live=[lambda: (True, "loop ok")]).start()
>>> import urllib.request
>>> urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz").read().decode()
'ok\\nloop ok\\n'
>>> server.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from tracejudge.ops.broker import QueueReading

log = logging.getLogger(__name__)

__all__ = ["Check", "MetricsServer", "Readings", "metrics_source", "queue_metrics", "pickup_metrics", "budget_metrics"]

#: A probe's check: (holds, one line saying what was seen).
Check = Callable[[], tuple[bool, str]]


class _Combined:
    """Several collectors as one registry (what ``generate_latest`` reads)."""

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self.sources:
            yield from source.collect()


def metrics_source(metrics_dir: str | None, *extra: Any) -> Any:
    """What ``/metrics`` serves: this process's registry, or the sum of every process's files in ``metrics_dir``;
    plus ``extra`` collectors (:class:`Readings`)."""
    if metrics_dir:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        return _Combined(registry, *extra)
    return _Combined(REGISTRY, *extra)


class Readings:
    """A collector whose ``read()`` builds metric families at scrape time (from Redis); a failure is logged
    and leaves those families out of that scrape, never the whole page."""

    def __init__(self, name: str, read: Callable[[], Iterable[Metric]]) -> None:
        self.name = name
        self.read = read
        self._warned = 0.0

    def collect(self) -> Iterable[Metric]:
        try:
            families = list(self.read())
        except Exception as exc:
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("metrics: could not read %s: %s", self.name, exc)
            return []
        return families


def queue_metrics(readings: dict[str, QueueReading]) -> list[Metric]:
    """``tracejudge_queue_depth{queue}`` and ``tracejudge_oldest_message_age_seconds{queue}`` (0 when empty; no
    sample when messages wait with an unknown age, as on RabbitMQ: absent, not 0).

    >>> [(s.labels["queue"], s.value) for f in queue_metrics({"a": QueueReading(2, None), "b": QueueReading(0, None)})
    ...  for s in f.samples if f.name == "tracejudge_oldest_message_age_seconds"]
    [('b', 0.0)]
    """
    depth = GaugeMetricFamily("tracejudge_queue_depth", "Messages waiting in the queue (read from the broker).", labels=["queue"])
    age = GaugeMetricFamily(
        "tracejudge_oldest_message_age_seconds",
        "Age of the queue's oldest waiting message (its enqueue time; 0 when empty; absent when unknown: RabbitMQ).",
        labels=["queue"],
    )
    for queue, reading in sorted(readings.items()):
        depth.add_metric([queue], reading.depth)
        if not reading.age_unknown:
            age.add_metric([queue], reading.oldest_age_seconds or 0.0)
    return [depth, age]


def pickup_metrics(watermarks: dict[str, int | None], *, now: float | None = None) -> list[Metric]:
    """``tracejudge_pickup_lag_seconds{experiment}``: now minus the experiment's pick-up watermark."""
    now = time.time() if now is None else now
    lag = GaugeMetricFamily(
        "tracejudge_pickup_lag_seconds", "Now minus the online pick-up's watermark, per experiment.", labels=["experiment"]
    )
    for experiment, mark in sorted(watermarks.items()):
        if mark is not None:
            lag.add_metric([experiment], max(0.0, now - mark / 1000.0))
    return [lag]


def budget_metrics(remaining_usd: float | None) -> list[Metric]:
    """``tracejudge_budget_remaining_usd`` (left of today's ``judges.budget.daily_usd``; absent without a budget)."""
    if remaining_usd is None:
        return []
    gauge = GaugeMetricFamily("tracejudge_budget_remaining_usd", "USD left of today's judge budget (UTC day).")
    gauge.add_metric([], max(0.0, remaining_usd))
    return [gauge]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port``, in a daemon thread (``port=0``: any free port)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        source: Any = None,
        live: list[Check] | None = None,
        ready: list[Check] | None = None,
    ) -> None:
        self.host = host
        self.source = source if source is not None else metrics_source(None)
        self.live = list(live or [])
        self.ready = list(ready or [])
        self._server = make_server(host, port, self._app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="tracejudge-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", self.host, self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, request: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = request.get("PATH_INFO", "/")  # the WSGI environ
        if path in ("/metrics", "/metrics/"):
            body = generate_latest(self.source)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/healthz":
            return self._probe(start_response, self.live)
        if path == "/readyz":
            return self._probe(start_response, self.live + self.ready)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    @staticmethod
    def _probe(start_response: Callable[..., Any], checks: list[Check]) -> list[bytes]:
        lines, ok = [], True
        for check in checks:
            try:
                holds, why = check()
            except Exception as exc:  # a check that cannot tell is a failed check
                holds, why = False, f"{type(exc).__name__}: {exc}"
            ok = ok and holds
            lines.append(why if holds else f"FAIL {why}")
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
        return [("ok\n" if ok else "unhealthy\n").encode() + "".join(f"{line}\n" for line in lines).encode()]
