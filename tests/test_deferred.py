"""Deferred evaluations (``controls/deferred.py``) against a real Redis: none lost, none all at midnight.

The release used to remove an entry before sending it, so a releaser killed in
between lost the evaluation for good. Here a real releaser process is SIGKILLed
inside its send (after taking the entry, before confirming it): the entry is
still there, and the next release sends it. And a request deferred to the next
day is due at a point spread over that day's first hour, not at 00:00 with all
the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import redis as redis_lib

from tracejudge.controls.deferred import (
    DEFERRED_KEY,
    PROCESSING_KEY,
    RECLAIM_AFTER_SECONDS,
    RETRY_SECONDS,
    SPREAD_SECONDS,
    TRACES_BUILT_KEY,
    TRACES_KEY,
    defer,
    next_utc_day,
    pending,
    rebuild_trace_index,
    release_due,
)
from tracejudge.monitor.collect import scheduled_traces
from tracejudge.payload import EvaluationRequest

NOW = 1_764_000_000.0  # a fixed moment (releases take ``now``; nothing here waits)

KILLED_RELEASER = """
import os, signal, sys
import redis
from tracejudge.controls.deferred import release_due

url, prefix, now, when = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
client = redis.Redis.from_url(url)

def send(request):
    if when == "after":  # the message reached the broker (here: a list), then the releaser dies
        client.rpush(prefix + "sent", request.evaluation_id)
    os.kill(os.getpid(), signal.SIGKILL)

release_due(client, prefix, send, now=now)
"""


@pytest.fixture()
def r(redis_url):
    return redis_lib.Redis.from_url(redis_url)


@pytest.fixture()
def prefix() -> str:
    return f"tjdefer-{uuid.uuid4().hex[:8]}:"


def request(n: int = 1) -> EvaluationRequest:
    return EvaluationRequest(trace_id=f"tr-{uuid.uuid4().hex}", evaluation_id=f"ev-{n}-{uuid.uuid4().hex[:6]}")


def run_killed_releaser(redis_url: str, prefix: str, *, now: float, when: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RELEASER, redis_url, prefix, repr(now), when], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, f"the releaser was meant to be SIGKILLed: rc={done.returncode} {done.stderr[-2000:]}"


def test_a_releaser_killed_before_the_send_loses_nothing(r, redis_url, prefix):
    req = request()
    defer(r, prefix, req, until=NOW - 1)
    run_killed_releaser(redis_url, prefix, now=NOW, when="before")
    assert pending(r, prefix) == 1, "the deferred evaluation was lost with its releaser"
    assert r.zcard(prefix + DEFERRED_KEY) == 0 and r.zcard(prefix + PROCESSING_KEY) == 1  # taken, not confirmed

    sent: list[EvaluationRequest] = []
    # a live releaser's claim is respected: the next minute's release leaves it alone ...
    assert release_due(r, prefix, sent.append, now=NOW + 60) == 0
    # ... and once the claim is older than any live release, the next release sends it
    assert release_due(r, prefix, sent.append, now=NOW + RECLAIM_AFTER_SECONDS + 1) == 1
    assert [s.evaluation_id for s in sent] == [req.evaluation_id]
    assert pending(r, prefix) == 0


def test_a_releaser_killed_after_the_send_sends_again_at_least_once(r, redis_url, prefix):
    """Killed between the send and the removal: the entry is sent again (an evaluation is idempotent)."""
    req = request()
    defer(r, prefix, req, until=NOW - 1)
    run_killed_releaser(redis_url, prefix, now=NOW, when="after")
    assert [x.decode() for x in r.lrange(prefix + "sent", 0, -1)] == [req.evaluation_id]
    sent: list[EvaluationRequest] = []
    assert release_due(r, prefix, sent.append, now=NOW + RECLAIM_AFTER_SECONDS + 1) == 1
    assert [s.evaluation_id for s in sent] == [req.evaluation_id] and pending(r, prefix) == 0


def test_a_failed_send_puts_back_that_entry_and_the_rest(r, prefix):
    reqs = [request(n) for n in range(3)]
    for n, req in enumerate(reqs):
        defer(r, prefix, req, until=NOW - 10 + n)  # released in this order
    calls: list[str] = []

    def send(req: EvaluationRequest) -> None:
        calls.append(req.evaluation_id)
        if len(calls) == 2:
            raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        release_due(r, prefix, send, now=NOW)
    assert calls == [reqs[0].evaluation_id, reqs[1].evaluation_id]
    assert r.zcard(prefix + PROCESSING_KEY) == 0 and pending(r, prefix) == 2
    scores = {EvaluationRequest.model_validate(json.loads(m)).evaluation_id: s
              for m, s in r.zrange(prefix + DEFERRED_KEY, 0, -1, withscores=True)}
    assert scores == {reqs[1].evaluation_id: NOW + RETRY_SECONDS, reqs[2].evaluation_id: NOW}
    sent: list[EvaluationRequest] = []
    assert release_due(r, prefix, sent.append, now=NOW + RETRY_SECONDS) == 2
    assert sorted(s.evaluation_id for s in sent) == sorted([reqs[1].evaluation_id, reqs[2].evaluation_id])


def test_two_releasers_never_send_one_entry_twice(r, prefix):
    for n in range(20):
        defer(r, prefix, request(n), until=NOW - 1)
    first: list[EvaluationRequest] = []
    second: list[EvaluationRequest] = []
    # the second releaser runs while the first is in the middle of its sends
    release_due(r, prefix, lambda req: (first.append(req), second or release_due(r, prefix, second.append, now=NOW)), now=NOW, limit=10)
    release_due(r, prefix, first.append, now=NOW)
    ids = [s.evaluation_id for s in first + second]
    assert len(ids) == 20 and len(set(ids)) == 20 and pending(r, prefix) == 0


def test_deferred_to_the_next_day_they_wake_spread_over_its_first_hour(r, prefix):
    day = next_utc_day(NOW)
    whens = [defer(r, prefix, request(n), now=NOW) for n in range(200)]
    assert all(day <= w < day + SPREAD_SECONDS for w in whens)
    assert len({int(w) for w in whens}) > 150  # spread, not one midnight burst
    buckets = [sum(1 for w in whens if day + q * SPREAD_SECONDS / 4 <= w < day + (q + 1) * SPREAD_SECONDS / 4) for q in range(4)]
    assert min(buckets) >= 25, buckets  # roughly even over the hour
    assert release_due(r, prefix, lambda req: None, now=day - 1) == 0  # nothing before the day starts
    at_quarter = release_due(r, prefix, lambda req: None, now=day + SPREAD_SECONDS / 4)
    assert at_quarter == buckets[0]
    assert release_due(r, prefix, lambda req: None, now=day + SPREAD_SECONDS) == 200 - at_quarter
    # the same request always lands on the same point (a re-deferral does not move it around)
    again = request()
    assert defer(r, prefix, again, now=NOW) == defer(r, prefix, again, now=NOW + 5)


def _by_scan(r, prefix) -> set[str]:
    """The traces with an entry waiting, read the old way: every request in both sets."""
    members = r.zrange(prefix + DEFERRED_KEY, 0, -1) + r.zrange(prefix + PROCESSING_KEY, 0, -1)
    return {json.loads(m)["trace_id"] for m in members}


def test_the_report_asks_the_trace_index_which_agrees_with_the_sets_at_every_step(r, prefix):
    """The report looks up only the traces it asks about (``scheduled_traces``); the per-trace index the scripts keep
    says what reading every deferred request would, through re-deferral, take, failed send, sent and rebuild."""
    one, two = request(1), request(2)
    same_trace = EvaluationRequest(trace_id=one.trace_id, evaluation_id="ev-other")
    ask = {one.trace_id, two.trace_id, "tr-never-deferred"}
    lookup = scheduled_traces(r, prefix)

    def check(expected: set[str]) -> None:
        assert _by_scan(r, prefix) == expected
        assert lookup(ask) == expected

    defer(r, prefix, one, until=NOW - 3)
    defer(r, prefix, one, until=NOW - 3)  # the same entry again: re-scored, not counted twice
    defer(r, prefix, same_trace, until=NOW + 3600)  # a second entry of the same trace, not due yet
    defer(r, prefix, two, until=NOW - 2)
    check({one.trace_id, two.trace_id})
    assert {k.decode(): int(v) for k, v in r.hgetall(prefix + TRACES_KEY).items()} == {one.trace_id: 2, two.trace_id: 1}

    with pytest.raises(ConnectionError):  # a failed send puts both back: nothing changes for the report
        release_due(r, prefix, lambda req: (_ for _ in ()).throw(ConnectionError("broker down")), now=NOW)
    check({one.trace_id, two.trace_id})

    # sent while the worker had already deferred the same request again (it sits in both sets for a moment)
    def send(req: EvaluationRequest) -> None:
        if req.evaluation_id == one.evaluation_id:
            defer(r, prefix, req, until=NOW + 7200)

    assert release_due(r, prefix, send, now=NOW + RETRY_SECONDS) == 2
    check({one.trace_id})  # ``one`` deferred again (and ``same_trace`` still waits); ``two`` sent
    assert int(r.hget(prefix + TRACES_KEY, one.trace_id)) == 2

    assert release_due(r, prefix, lambda req: None, now=NOW + 7200) == 2
    check(set())
    assert r.exists(prefix + TRACES_KEY) == 0  # nothing left behind

    # entries deferred before the index was kept (an upgrade): the first release rebuilds it, once
    r.zadd(prefix + DEFERRED_KEY, {two.model_dump_json(exclude_none=True): NOW + 99_999})  # as the old code did
    r.delete(prefix + TRACES_BUILT_KEY)
    assert lookup(ask) == set()
    assert release_due(r, prefix, lambda req: None, now=NOW) == 0
    check({two.trace_id})
    assert rebuild_trace_index(r, prefix) == 1 and int(r.hget(prefix + TRACES_KEY, two.trace_id)) == 1
