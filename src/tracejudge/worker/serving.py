"""What a worker process runs beside Celery: metrics, the loop watchdog, and the probes' server.

Started from the worker's signals (``celery_app.py``), once its runtime exists:

* metrics are recorded (``ops.metrics.enable``) when ``TRACEJUDGE_METRICS_PORT`` is set, or when the
  process is a supervised child (``PROMETHEUS_MULTIPROC_DIR`` set by its supervisor);
* the watchdog (``ops/watchdog.py``) measures the event loop's lag. When the loop has been blocked
  for ``TRACEJUDGE_LOOP_BLOCK_SECONDS`` the process stops renewing its messages' lease (so the broker
  gives them to other workers after the visibility timeout), ``/healthz`` answers 503, and after
  :data:`EXIT_GRACE_SECONDS` the process exits with :data:`EXIT_LOOP_BLOCKED`, so its supervisor
  (``tracejudge worker``, systemd, Kubernetes) starts a fresh one;
* a process that serves (not a supervised child) answers ``/metrics``, ``/healthz`` and ``/readyz``
  on the metrics port; a supervised child writes its health to a file its supervisor reads.

The scrape-time readings (queue depth and age, pick-up lag, budget left) are built here too
(:func:`readings`), since they need the broker's and the controls' key names.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from tracejudge.config import Settings
from tracejudge.ops import metrics
from tracejudge.ops.health import ProcessHealth
from tracejudge.ops.server import Check, MetricsServer, Readings, metrics_source
from tracejudge.ops.watchdog import LoopWatchdog

log = logging.getLogger(__name__)

#: The exit status of a worker process whose event loop stayed blocked (EX_SOFTWARE).
EXIT_LOOP_BLOCKED = 70
#: Seconds between "blocked" (lease stopped, /healthz 503) and the exit: a probe and the logs can see why.
EXIT_GRACE_SECONDS = 3.0

_lock = threading.Lock()
_state: dict[str, Any] = {}


def enable_metrics(settings: Settings) -> bool:
    """Record metrics in this process when a port is set or a supervisor collects them (idempotent)."""
    if settings.metrics_port is not None or settings.metrics_dir:
        metrics.enable()
        return True
    return False


def supervised() -> bool:
    """This process is a child of ``tracejudge worker --processes N`` (its supervisor serves the port)."""
    return bool(_state.get("supervised"))


def mark_supervised() -> None:
    _state["supervised"] = True


def on_worker_ready(runtime: Any, *, settings: Settings | None = None) -> None:
    """The consumer is up and the runtime built: start the watchdog, the health record, the server (once)."""
    settings = settings or Settings.from_env()
    with _lock:
        if _state.get("pid") == os.getpid():
            return
        _state["pid"] = os.getpid()
        enable_metrics(settings)
        health = ProcessHealth(block_seconds=settings.loop_block_seconds, consumer_ready=True)
        _state["health"] = health
        directory = settings.metrics_dir if supervised() else None

        def on_tick(dog: LoopWatchdog) -> None:
            health.update(lag=dog.lag, blocked=dog.blocked)
            health.interval = dog.interval
            if directory:
                health.write(directory)

        dog = LoopWatchdog(
            runtime.loop.loop,
            block_seconds=settings.loop_block_seconds,
            loop_thread=runtime.loop.thread,
            on_blocked=lambda lag, stack: _loop_blocked(health, directory, runtime, stack),
            on_tick=on_tick,
        ).start()
        _state["watchdog"] = dog
        on_tick(dog)
        if settings.metrics_port is not None and not supervised():
            server = MetricsServer(
                host=settings.metrics_host,
                port=settings.metrics_port,
                source=metrics_source(settings.metrics_dir, *readings(settings)),
                live=[health.live],
                ready=[health.ready, *ready_checks(settings)],
            ).start()
            _state["server"] = server


def _loop_blocked(health: ProcessHealth, directory: str | None, runtime: Any, stack: str) -> None:
    from tracejudge.tasks.quarantine import judges_on_stack, quarantine
    from tracejudge.worker import lease

    health.update(lag=health.lag, blocked=True)
    if directory:
        health.write(directory)
    stopped = lease.stop_all()
    try:  # the judges the loop is stuck in are not run again for a while, so the redelivery does not block again
        stuck = judges_on_stack(runtime.loop.thread.ident)
        last = [line.strip() for line in stack.strip().splitlines() if line.strip().startswith("File ")]
        quarantine(runtime.state, stuck, where=last[-1] if last else "")
        if stuck:
            log.error("judges in quarantine for an hour (answered LOOP_BLOCKED): %s", ", ".join(f"{n} (version {v})" for n, v in stuck))
    except Exception as exc:  # Redis down: the redelivered evaluation may block once more
        log.warning("could not put the blocking judge in quarantine: %s", exc)
    log.error(
        "stopped renewing the lease on this worker's messages (%d lease(s)): the broker gives them to another worker "
        "after the visibility timeout; exiting in %g s with status %d so this worker is restarted",
        stopped, EXIT_GRACE_SECONDS, EXIT_LOOP_BLOCKED,
    )
    timer = threading.Timer(EXIT_GRACE_SECONDS, _exit_blocked)
    timer.daemon = True
    timer.start()


def _exit_blocked() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(EXIT_LOOP_BLOCKED)


def watchdog() -> LoopWatchdog | None:
    """This process's watchdog (tests)."""
    return _state.get("watchdog") if _state.get("pid") == os.getpid() else None


# --------------------------------------------------------------------------- probes and scrape-time readings


def ready_checks(settings: Settings) -> list[Check]:
    """Readiness beyond the consumer: Redis answers, and the tracking store does (a server's ``/health``)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)

    def redis_answers() -> tuple[bool, str]:
        try:
            client.ping()
            return True, "redis answers"
        except Exception as exc:
            return False, f"redis does not answer: {type(exc).__name__}"

    checks: list[Check] = [redis_answers]
    uri = settings.mlflow_tracking_uri or ""
    if urlsplit(uri).scheme in ("http", "https"):
        checks.append(lambda: _tracking_server_answers(uri))
    return checks


def _tracking_server_answers(uri: str) -> tuple[bool, str]:
    import httpx

    try:
        response = httpx.get(uri.rstrip("/") + "/health", timeout=2.0)
        return response.status_code == 200, f"tracking server /health: {response.status_code}"
    except Exception as exc:
        return False, f"tracking server does not answer: {type(exc).__name__}"


def readings(settings: Settings) -> list[Readings]:
    """The gauges read from Redis when Prometheus scrapes: queues (Redis broker), pick-up lag, budget left."""
    import redis

    from tracejudge.config import ConfigError, load_config
    from tracejudge.controls.budget import read_spend
    from tracejudge.controls.online import pickup_watermarks
    from tracejudge.ops.broker import read_amqp_url, read_queues
    from tracejudge.ops.server import budget_metrics, pickup_metrics, queue_metrics
    from tracejudge.tasks.state import RedisState
    from tracejudge.worker.names import QUEUES

    state = RedisState(redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2), prefix=settings.key_prefix)
    found: list[Readings] = [Readings("pick-up watermarks", lambda: pickup_metrics(pickup_watermarks(state)))]
    if settings.broker_is_redis:
        broker = redis.Redis.from_url(settings.broker_url or settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        found.append(Readings("queues", lambda: queue_metrics(read_queues(broker, QUEUES, prefix=settings.key_prefix))))
    else:  # RabbitMQ: the depth from a passive declare per scrape, the age unknown (no sample)
        found.append(Readings("queues", lambda: queue_metrics(read_amqp_url(settings.broker_url, QUEUES))))
    try:
        daily = load_config(settings.config_path).judges.budget.daily_usd
    except ConfigError:
        daily = None
    if daily is not None:

        def budget() -> list[Any]:
            spend = read_spend(state.redis, prefix=settings.key_prefix, limit_usd=daily)
            return budget_metrics(daily - spend.spent_usd - spend.reserved_usd)

        found.append(Readings("budget", budget))
    return found

