"""RabbitMQ as the broker (``TRACEJUDGE_BROKER_URL=amqp://...``; Redis keeps results, locks, limits and caches).

Against the machine's RabbitMQ (``./run-tests.sh`` starts ``rabbitmq-server`` if nothing answers,
``scripts/ensure-rabbitmq.sh``), each test on a private virtual host, with real worker subprocesses:
a worker SIGKILLed mid-run with default settings (RabbitMQ requeues its unacknowledged messages when
its connection drops), and an evaluation longer than Redis's visibility timeout on a live worker
(delivered once). Counted, never timed.
"""

from __future__ import annotations

import shutil

import pytest

import tracejudge
from tracejudge.config import ConfigError, Settings
from tracejudge.testing.processes import rabbit_answers, rabbit_base_url
from tracejudge.worker.celery_app import celery_settings

needs_rabbitmq = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("rabbitmqctl") is None or not rabbit_answers(),
    reason=f"needs redis-server, rabbitmqctl and a RabbitMQ at {rabbit_base_url()} (scripts/ensure-rabbitmq.sh starts one)",
)


def test_broker_url_selects_rabbitmq_and_redis_keeps_the_results():
    settings = Settings.from_env(
        {"TRACEJUDGE_REDIS_URL": "redis://:pw@cache:6379/0", "TRACEJUDGE_BROKER_URL": "amqp://tj:secret@rabbit:5672/tj"}
    )
    conf = celery_settings(settings)
    assert conf["broker_url"] == "amqp://tj:secret@rabbit:5672/tj"
    assert conf["result_backend"] == "redis://:pw@cache:6379/0"
    # no Redis-only transport options (visibility timeout, key prefix, queue order) on RabbitMQ
    assert "visibility_timeout" not in conf["broker_transport_options"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert "secret" not in repr(settings) and "secret" not in str(settings.redacted())
    # without it, the broker is the Redis URL as before
    assert celery_settings(Settings.from_env({"TRACEJUDGE_REDIS_URL": "redis://cache:6379/0"}))["broker_url"] == (
        "redis://cache:6379/0"
    )


def test_a_broker_url_of_another_kind_is_a_clear_error():
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"TRACEJUDGE_BROKER_URL": "kafka://user:hunter2@broker:9092"})
    message = str(error.value)
    assert "TRACEJUDGE_BROKER_URL" in message and "amqp://" in message
    assert "hunter2" not in message


@needs_rabbitmq
def test_worker_sigkilled_on_rabbitmq_loses_and_duplicates_nothing():
    from tests.test_reliability_processes import assert_exact, show
    from tests.chaos import run_worker_kill

    result = run_worker_kill(traces=40, latency_ms=150, concurrency=8, broker="rabbitmq")
    show(result)
    assert result.notes["unacked_at_kill"] > 0, result.describe()
    assert result.notes["verdicts_before_kill"] < result.traces, result.describe()
    assert_exact(result)
    assert result.llm_requests >= result.expected_llm_requests


@needs_rabbitmq
def test_a_long_evaluation_on_a_live_rabbitmq_worker_is_delivered_once():
    from tests.test_reliability_processes import assert_exact, show
    from tests.chaos import run_long_evaluation

    result = run_long_evaluation(seconds=25, workers=2, broker="rabbitmq")
    show(result)
    assert_exact(result)
    assert result.notes["deliveries"] == 1, result.describe()
    assert result.llm_requests == result.expected_llm_requests, result.describe()


@needs_rabbitmq
def test_enqueue_to_an_unreachable_rabbitmq_fails_clearly(monkeypatch, redis_url):
    from tracejudge.testing.processes import free_port
    from tracejudge.worker import reset_app

    monkeypatch.setenv("TRACEJUDGE_REDIS_URL", redis_url)
    monkeypatch.setenv("TRACEJUDGE_BROKER_URL", f"amqp://guest:s3cret@127.0.0.1:{free_port()}//")
    reset_app()
    try:
        with pytest.raises(tracejudge.EnqueueError) as error:
            tracejudge.enqueue("tr-0123456789abcdef0123456789abcdef", config={"observability": {"mlflow": {"enabled": True}}})
    finally:
        monkeypatch.undo()
        reset_app()
    message = str(error.value)
    assert "amqp://guest:***@127.0.0.1" in message and "s3cret" not in message
