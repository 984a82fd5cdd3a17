"""No sink secret rests in Redis or in a task (issue 18, point 5).

``enqueue(config=...)`` ships the config in the task's arguments: the broker message sits in Redis until a
worker takes it, and the result backend keeps the arguments with the result (``result_extended``). A config
whose alert sinks hold webhook URLs is enqueued; every key in the Redis database is read, before a worker
runs the task (the message) and after (the result), and the worker's log lines too: the URL is nowhere.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid

SECRET = f"SECRET-SINK-{uuid.uuid4().hex[:12]}"  # fresh per run: what earlier runs left in the db never matches
CONFIG = {
    "quality_alerts": {
        "rules": [{"kind": "failure_rate", "above": 0.2}],
        "sinks": [{"type": "slack", "url": f"https://hooks.example/services/T0/{SECRET}"},
                  {"type": "webhook", "url": f"https://alerts.example/hook?token={SECRET}"}],
    },
    "quality_gate": {"enabled": True, "threshold": 0.5},
}


def readable(value) -> str:
    """A value as text, with kombu's base64 message bodies decoded (so a secret cannot hide in one)."""
    text = repr(value)
    items = value if isinstance(value, (list, set, tuple)) else (value.values() if isinstance(value, dict) else [value])
    for item in items:
        if isinstance(item, tuple):
            item = item[0]
        try:
            message = json.loads(item)
        except (TypeError, ValueError):
            continue
        if isinstance(message, dict) and message.get("properties", {}).get("body_encoding") == "base64":
            text += " " + base64.b64decode(message["body"]).decode()
        elif isinstance(message, list) and message and isinstance(message[0], dict):  # unacked: [message, exchange, key]
            text += " " + readable([json.dumps(message[0])])
    return text


def everything_in(redis) -> str:
    """Every key and value in the database, as text (message bodies decoded)."""
    out = []
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        if kind == "string":
            value = redis.get(key)
        elif kind == "list":
            value = redis.lrange(key, 0, -1)
        elif kind == "hash":
            value = redis.hgetall(key)
        elif kind == "zset":
            value = redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = redis.smembers(key)
        elif kind == "stream":
            value = redis.xrange(key)
        else:
            value = kind
        out.append(f"{key!r} {readable(value)}")
    return "\n".join(out)


def test_enqueue_with_alert_sinks_leaves_no_sink_url_in_redis_or_the_logs(pipeline_env, article_trace, caplog):
    import redis as redis_lib
    from celery.contrib.testing.worker import start_worker

    import tracejudge
    from tracejudge.worker import QUEUES, get_app

    redis = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    caplog.set_level(logging.DEBUG)
    handle = tracejudge.enqueue(article_trace, config=CONFIG)

    queued = everything_in(redis)
    assert article_trace in queued and "quality_gate" in queued  # the message (with its config) is in Redis
    assert SECRET not in queued

    with start_worker(get_app(), pool="threads", concurrency=2, perform_ping_check=False, queues=list(QUEUES),
                      shutdown_timeout=30, loglevel="DEBUG"):
        verdict = handle.verdict(timeout=120)
    assert verdict.trace_id == article_trace and verdict.status in ("passed", "failed")

    stored = everything_in(redis)
    assert f"celery-task-meta-{handle.id}" in stored and article_trace in stored  # the result, with its arguments
    assert SECRET not in stored
    assert SECRET not in caplog.text


def test_the_alerts_section_never_travels_even_from_an_old_producer():
    from tracejudge.config import load_config
    from tracejudge.payload import EvaluationRequest, SessionRequest

    config = load_config(CONFIG)
    assert config.quality_alerts.sinks[0].url.endswith(SECRET)  # the workers' own config keeps it (for beat)
    for request in (EvaluationRequest(trace_id="tr-1", config=config), SessionRequest(session_id="s-1", config=config)):
        assert SECRET not in request.model_dump_json() and SECRET not in repr(request)
        assert request.config.quality_gate.threshold == 0.5 and request.config.quality_alerts.rules == []
    # a payload that still holds the section (an older producer): the worker's request drops it on reading
    old = {"trace_id": "tr-2", "config": config.model_dump(mode="json")}
    assert SECRET in str(old)
    assert EvaluationRequest.model_validate(old).config.quality_alerts.sinks[0].url is None


def test_a_sink_url_is_not_in_the_configs_repr():
    from tracejudge.config import load_config

    assert SECRET not in repr(load_config(CONFIG)) and SECRET not in str(load_config(CONFIG).quality_alerts)
