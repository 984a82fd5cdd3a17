"""The Celery app: Redis (or RabbitMQ) broker, Redis result backend, JSON only, at-least-once delivery.

Settings and why (measured, see docs/architecture.md):

* ``task_acks_late`` + ``task_reject_on_worker_lost`` + prefetch 1: a task is
  acknowledged only after it returns, so a killed worker's task comes back;
* on Redis, a short ``visibility_timeout`` (15 s) that live workers renew for
  the messages they hold (``worker/lease.py``), and kombu's unacked-restore
  sweep every fifth of it, so a killed worker's tasks come back in ~15-18 s
  and a live worker's never; duplicates are still possible, and evaluations
  are idempotent; RabbitMQ redelivers on a dropped connection by itself;
* JSON only (``accept_content=["json"]``): a pickled message is refused;
* the STARTED state is stored (``handle.status``), task events are not sent
  unless a monitor asks (Flower does; or ``-E``): they cost CPU per task;
* two queues: ``tracejudge.gate`` (someone waits) and ``tracejudge.online``
  (background); workers read them in ``sorted`` order, so the gate queue is
  always asked first and a backlog never delays a gate.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery, signals

from tracejudge.config import Settings
from tracejudge.tasks import get_runtime, prepare_worker_process, warm_runtime
from tracejudge.tasks.runtime import JudgeModuleError
from tracejudge.worker import alerts_task, fetch, lease, serving, session_task, task
from tracejudge.worker.lease import lease_interval
from tracejudge.worker.names import QUEUE_GATE, QUEUE_ONLINE, QUEUES, TASK_EVALUATE

log = logging.getLogger(__name__)

__all__ = ["QUEUES", "QUEUE_GATE", "QUEUE_ONLINE", "TASK_EVALUATE", "celery_settings", "make_app"]

#: Celery's (soft, hard) time limits: a backstop on prefork only (our own deadlines bound an evaluation);
#: not tied to the visibility timeout, which the lease (``worker/lease.py``) keeps short.
SOFT_TIME_LIMIT, HARD_TIME_LIMIT = 780, 840
#: A producer whose Redis is down gets an error in about a second, not after Celery's 20 retries.
PRODUCER_BACKEND_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5, "timeout": 5.0}
#: A worker storing a verdict rides out a Redis restart (about 30 s).
WORKER_BACKEND_RETRY = {"max_retries": 30, "interval_start": 0, "interval_step": 1, "interval_max": 2, "timeout": 5.0}
#: ``retry_policy`` above covers only the backend's SET; storing a result first GETs the old one, and
#: only ``result_backend_always_retry`` retries that (and every other backend call): about a minute.
WORKER_BACKEND_ALWAYS_RETRY = {
    "result_backend_always_retry": True,
    "result_backend_max_retries": 40,
    "result_backend_base_sleep_between_retries_ms": 200,
    "result_backend_max_sleep_between_retries_ms": 3000,
}


def with_tls_defaults(url: str) -> str:
    """``rediss://`` URLs need ``ssl_cert_reqs`` for Celery's backend; default it to ``required``.

    >>> with_tls_defaults("rediss://:pw@redis:6380/0")
    'rediss://:pw@redis:6380/0?ssl_cert_reqs=required'
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss" or "ssl_cert_reqs" in parse_qs(parts.query):
        return url
    return url + ("&" if parts.query else "?") + "ssl_cert_reqs=required"


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The Celery configuration tracejudge runs with."""
    visibility = settings.visibility_timeout
    transport: dict[str, Any] = {
        "visibility_timeout": visibility,
        # kombu's restore sweep as often as the lease renews: a dead worker's messages back in ~VT + VT/5
        "unacked_restore_interval": lease_interval(visibility),
        "unacked_restore_throttle": 1,
        "queue_order_strategy": "sorted",  # QUEUE_GATE sorts first: always asked first
        "max_connections": 200,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
    }
    backend_transport: dict[str, Any] = {"visibility_timeout": visibility, "retry_policy": PRODUCER_BACKEND_RETRY}
    prefix = settings.key_prefix
    from tracejudge.worker.scheduled import beat_schedule

    if prefix:  # a shared Redis: keep our queues, results and keys apart
        transport["global_keyprefix"] = prefix
        backend_transport["global_keyprefix"] = prefix
    if not settings.broker_is_redis:
        # RabbitMQ redelivers a dead consumer's unacknowledged messages as soon as its connection drops,
        # and never a live one's (up to its consumer_timeout, 30 min by default): no lease, no visibility
        # timeout. Queues are durable; a shared RabbitMQ is split by virtual host, not by key prefix.
        transport = {"confirm_publish": True, "connect_timeout": 5}
    broker_url = with_tls_defaults(settings.broker_url or settings.redis_url)
    extra: dict[str, Any] = {}
    if settings.broker_is_redis and fetch.transport_for(broker_url):
        # our Redis transport, for this app's connections only: a worker SIGKILLed mid-fetch must not lose the
        # message (worker/fetch.py); other apps and kombu connections in the process keep kombu's own fetch
        extra["broker_transport"] = fetch.transport_for(broker_url)
    return dict(
        **extra,
        broker_url=broker_url,
        result_backend=with_tls_defaults(settings.result_backend_url or settings.redis_url),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_deduplicate_successful_tasks=True,
        broker_transport_options=transport,
        result_backend_transport_options=backend_transport,
        visibility_timeout=visibility,
        result_expires=timedelta(hours=settings.result_expires_hours),
        result_extended=True,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        task_soft_time_limit=SOFT_TIME_LIMIT,
        task_time_limit=HARD_TIME_LIMIT,
        task_default_queue=QUEUE_ONLINE,
        task_routes={TASK_EVALUATE: {"queue": QUEUE_ONLINE}},
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
        # Task events (3 broker publishes per task) only for a monitor: off they saved ~6 ms of worker CPU per
        # trace (bench/README.md). Flower turns them on in running workers itself (its enable_events, on by
        # default); `tracejudge worker -E` sends them from the start.
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_soft_shutdown_timeout=30,
        worker_hijack_root_logger=False,
        # Celery beat (`tracejudge beat`): online pick-up and deferred evaluations; add entries beside ours
        beat_schedule=beat_schedule(_user_config(settings)),
    )


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured for tracejudge, with the evaluation task registered.

    >>> app = make_app(Settings.from_env({"TRACEJUDGE_REDIS_URL": "redis://127.0.0.1:6379/0"}))
    >>> app.conf.accept_content
    ['json']
    """
    settings = settings or Settings.from_env()
    app = Celery("tracejudge")
    app.conf.update(celery_settings(settings))
    task.register(app)
    lease.connect_signals()
    alerts_task.register(app)
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        **alerts_task.beat_entries(_user_config(settings)),
        **session_task.beat_entries(_user_config(settings)),
    }
    return app


def _user_config(settings: Settings) -> Any:
    """The workers' YAML config (for the beat schedule); defaults when it cannot be read (the worker reports it)."""
    from tracejudge.config import ConfigError, load_config

    try:
        return load_config(settings.config_path)
    except ConfigError:
        return load_config({})


@signals.worker_init.connect
def _warm_worker(sender: Any = None, **_: Any) -> None:
    """Once per worker: patient result storing, then the process's preparation (MLflow imported, ~2 s)."""
    app = getattr(sender, "app", None)
    if app is not None:
        options = dict(app.conf.result_backend_transport_options or {})
        options["retry_policy"] = WORKER_BACKEND_RETRY
        app.conf.result_backend_transport_options = options
        # (the producer keeps failing fast; a worker must not lose a verdict to a Redis restart)
        app.conf.update(WORKER_BACKEND_ALWAYS_RETRY)
    try:
        prepare_worker_process()
    except JudgeModuleError as exc:  # fatal: a worker without its judges must not report ready (Celery logs and goes on otherwise)
        log.critical("%s", exc)
        raise SystemExit(2) from None


@signals.worker_process_init.connect
def _warm_child(**_: Any) -> None:
    """Each prefork child builds its runtime (event loop, LLM client) before its first task."""
    serving.enable_metrics(Settings.from_env())  # into PROMETHEUS_MULTIPROC_DIR when one is set
    warm_runtime()


@signals.worker_ready.connect
def _warm_main(**_: Any) -> None:
    """Threads/solo pools share the main process: build its runtime once, now; then its watchdog and metrics."""
    warm_runtime()
    serving.on_worker_ready(get_runtime())
