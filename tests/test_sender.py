"""The non-blocking enqueue (``enqueue(..., block=False)``): a background sender with a bounded buffer.

Against the real Redis: messages arrive with the ids the handles gave out,
flush delivers everything, a process that exits right after enqueueing still
delivers, a broker outage is retried and then reported (never dropped), and
a full buffer is an error the caller sees. No timing assertions.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import tracejudge
from tracejudge.sender import BufferFull, QueuedHandle, Sender, SendFailure, configure_sender, get_sender
from tracejudge.payload import EvaluationRequest
from tracejudge.testing.processes import RedisServer, free_port

QUEUE = "tracejudge.online"


def _trace_id() -> str:
    return "tr-" + uuid.uuid4().hex


def _queued(client: redis.Redis, prefix: str) -> list[dict]:
    """The task messages waiting on the online queue: [{id, trace_id, evaluation_id}]."""
    found = []
    for raw in client.lrange(f"{prefix}{QUEUE}", 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        payload = args[0]
        found.append({"id": message["headers"]["id"], "trace_id": payload["trace_id"], "evaluation_id": payload["evaluation_id"]})
    return found


def _wait_until(predicate, *, timeout: float) -> bool:
    stop = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        stop.wait(0.05)
    return predicate()


@pytest.fixture()
def private_queue(pipeline_env, monkeypatch) -> Iterator[tuple[redis.Redis, str]]:
    """A key prefix of its own, so no worker takes these messages and they can be read back."""
    from tracejudge.worker import reset_app

    prefix = f"tjsender-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix)
    reset_app()
    client = redis.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        monkeypatch.undo()
        reset_app()


def test_non_blocking_enqueue_delivers_every_message_with_its_id(private_queue):
    client, prefix = private_queue
    configure_sender()  # a fresh sender on this test's app
    trace_ids = [_trace_id() for _ in range(30)]
    handles = [tracejudge.enqueue(t, block=False) for t in trace_ids]
    assert all(isinstance(h, QueuedHandle) for h in handles)
    assert all(h.id and len(h.id) == 32 for h in handles)  # known before anything was sent
    assert len({h.id for h in handles}) == 30
    assert tracejudge.last_handle() is handles[-1]

    assert get_sender().flush(timeout=60)
    assert all(h.sent() and h.error is None for h in handles)
    queued = _queued(client, prefix)
    assert sorted((q["id"], q["trace_id"]) for q in queued) == sorted((h.id, h.trace_id) for h in handles)
    assert all(q["id"] == q["evaluation_id"] for q in queued)  # the task id is the evaluation id
    stats = get_sender().stats()
    assert stats["failed"] == 0 and stats["pending"] == 0 and stats["sent"] >= 30


def test_flush_delivers_everything_in_the_buffer(private_queue):
    client, prefix = private_queue
    sender = Sender()
    try:
        requests = [EvaluationRequest(trace_id=_trace_id()) for _ in range(300)]
        handles = [sender.submit(r, None) for r in requests]
        assert sender.flush(timeout=120)
        assert sender.stats()["sent"] == 300 and sender.stats()["pending"] == 0
        assert {q["id"] for q in _queued(client, prefix)} == {h.id for h in handles}
    finally:
        assert sender.close(timeout=30)


def test_messages_enqueued_just_before_exit_are_flushed(private_queue, pipeline_env, tmp_path: Path):
    client, prefix = private_queue
    script = tmp_path / "producer.py"
    script.write_text(
        "import sys, tracejudge\n"
        "ids = [tracejudge.enqueue('tr-%032x' % i, block=False).id for i in range(1, 41)]\n"
        "print(' '.join(ids))\n"  # and exit at once: the atexit hook must send all 40
    )
    env = {**os.environ, **pipeline_env, "TRACEJUDGE_KEY_PREFIX": prefix}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids = set(done.stdout.split())
    assert len(ids) == 40
    assert {q["id"] for q in _queued(client, prefix)} == ids
    assert "gave up" not in done.stderr and "not sent" not in done.stderr


def test_broker_outage_is_retried_then_delivered(pipeline_env, monkeypatch):
    """Redis goes away after the first message and comes back: the buffered messages still arrive."""
    from tracejudge.worker import reset_app

    server = RedisServer(appendonly=False).start()
    try:
        monkeypatch.setenv("TRACEJUDGE_REDIS_URL", server.url)
        monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", "tjoutage:")
        reset_app()
        sender = Sender(retry_for=120)
        first = sender.submit(EvaluationRequest(trace_id=_trace_id()), None)
        assert first.wait_sent(timeout=60)

        server.stop()
        handles = [sender.submit(EvaluationRequest(trace_id=_trace_id()), None) for _ in range(5)]
        assert _wait_until(lambda: sender.stats()["retries"] > 0, timeout=60)  # the sender has seen the outage
        assert not any(h.sent() for h in handles)
        server.start()  # same port, empty (no append-only file)

        assert sender.flush(timeout=120)
        assert all(h.sent() for h in handles) and sender.stats()["failed"] == 0
        client = redis.Redis.from_url(server.url)
        assert {q["id"] for q in _queued(client, "tjoutage:")} == {h.id for h in handles}
        assert sender.close(timeout=30)
    finally:
        server.stop()
        monkeypatch.undo()
        reset_app()


def test_broker_that_stays_down_is_reported_not_dropped(pipeline_env, monkeypatch, caplog):
    from tracejudge.worker import reset_app

    monkeypatch.setenv("TRACEJUDGE_REDIS_URL", f"redis://:s3cretpw@127.0.0.1:{free_port()}/0")  # nothing listens
    reset_app()
    reported: list[SendFailure] = []
    try:
        sender = Sender(retry_for=0.5, on_error=reported.append)
        with caplog.at_level("ERROR", logger="tracejudge.sender"):
            handles = [sender.submit(EvaluationRequest(trace_id=_trace_id()), None) for _ in range(3)]
            assert sender.flush(timeout=120)  # finished: given up, not lost
        stats = sender.stats()
        assert stats["sent"] == 0 and stats["failed"] == 3 and stats["pending"] == 0
        assert {f.evaluation_id for f in sender.errors()} == {h.id for h in handles}
        assert {f.evaluation_id for f in reported} == {h.id for h in handles}
        for handle in handles:
            assert not handle.sent() and handle.status == "SEND_FAILED"
            assert isinstance(handle.error, tracejudge.EnqueueError)
            with pytest.raises(tracejudge.EnqueueError):
                handle.verdict(timeout=5)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert all(h.id in logged for h in handles)
        assert "s3cretpw" not in logged and all("s3cretpw" not in f.error for f in reported)
        assert sender.close(timeout=10)
    finally:
        monkeypatch.undo()
        reset_app()


def test_full_buffer_is_an_error_the_caller_sees():
    release, picked = threading.Event(), threading.Event()
    sent: list[str] = []

    def slow_send(request, config):
        picked.set()
        release.wait(60)
        sent.append(request.evaluation_id)

    sender = Sender(max_buffer=2, on_full="raise", send=slow_send)
    try:
        first = sender.submit(EvaluationRequest(trace_id=_trace_id()), None)
        assert picked.wait(60)  # the sender holds the first message; the buffer is empty
        queued = [sender.submit(EvaluationRequest(trace_id=_trace_id()), None) for _ in range(2)]
        # the caller's `except tracejudge.EnqueueError` catches the error the sender really raised
        with pytest.raises(tracejudge.EnqueueError, match="buffer is full") as raised:
            sender.submit(EvaluationRequest(trace_id=_trace_id()), None)
        assert type(raised.value) is BufferFull
        assert sender.stats()["rejected"] == 1
        release.set()
        assert sender.flush(timeout=60)
        assert sent == [first.id] + [h.id for h in queued]  # in order, nothing dropped
    finally:
        release.set()
        sender.close(timeout=10)


def test_blocking_put_waits_then_raises():
    release = threading.Event()
    sender = Sender(max_buffer=1, on_full="block", put_timeout=0.2, send=lambda r, c: release.wait(60))
    try:
        sender.submit(EvaluationRequest(trace_id=_trace_id()), None)
        sender.submit(EvaluationRequest(trace_id=_trace_id()), None)  # buffered, or picked up
        with pytest.raises(BufferFull):
            for _ in range(3):
                sender.submit(EvaluationRequest(trace_id=_trace_id()), None)
    finally:
        release.set()
        assert sender.flush(timeout=60)
        sender.close(timeout=10)


def test_a_bug_in_sending_is_reported_at_once():
    def broken(request, config):
        raise TypeError("not serializable")

    sender = Sender(send=broken, retry_for=60)
    try:
        handle = sender.submit(EvaluationRequest(trace_id=_trace_id()), None)
        assert not handle.wait_sent(timeout=60)
        assert "TypeError" in str(handle.error) and sender.stats()["failed"] == 1 and sender.stats()["retries"] == 0
    finally:
        sender.close(timeout=10)


def test_verdict_through_the_worker(worker, article_trace):
    handle = tracejudge.enqueue(article_trace, block=False, config={
        "observability": {"mlflow": {"judges": {"workflow_defaults": [{"name": "coherence", "threshold": 0.5}]}}}
    })
    assert isinstance(handle, QueuedHandle) and handle.id
    verdict = handle.verdict(timeout=120)
    assert verdict.trace_id == article_trace and verdict.evaluation_id == handle.id
    assert handle.sent() and handle.status == "SUCCESS"
