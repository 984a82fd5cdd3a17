"""The lease on held messages (``tracejudge.worker.lease``) against kombu's real Redis transport.

A message is delivered (not acknowledged) on a kombu channel with a short
visibility timeout, its entry in the unacked index is aged past that timeout,
and kombu's own restore sweep is run: without a renewal the message goes back
on its queue (what happens to a dead worker's messages); after a renewal it
stays with its holder; an acknowledged or already restored message is never
brought back by a renewal.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
from kombu import Connection, Exchange, Queue

from tracejudge.worker.lease import Lease, held_tags, lease_interval, renew

VISIBILITY = 15


@pytest.fixture()
def channel(redis_url: str):
    prefix = f"tjlease-{uuid.uuid4().hex[:8]}:"
    options = {"global_keyprefix": prefix, "visibility_timeout": VISIBILITY}
    with Connection(redis_url, transport_options=options) as conn:
        chan = conn.channel()
        queue = Queue("lease-test", Exchange("lease-test", type="direct"), routing_key="lease-test")
        bound = queue(chan)
        bound.declare()
        chan.queue = bound
        yield chan
        for key in ("unacked", "unacked_index", "lease-test"):
            chan.client.delete(key)


def deliver(channel, body: str):
    """Publish one message and take it without acknowledging it, as a worker does."""
    from kombu import Producer

    producer = Producer(channel)
    producer.publish(body, exchange="lease-test", routing_key="lease-test", serializer="json")
    for _ in range(50):
        message = channel.queue.get(no_ack=False)
        if message is not None:
            return message
        time.sleep(0.05)
    raise AssertionError("no message delivered")


def score(channel, tag: str) -> float | None:
    # (ZRANGE goes through kombu's key prefixing; ZSCORE would not)
    entries = channel.client.zrange(channel.unacked_index_key, 0, -1, withscores=True)
    return {member.decode(): value for member, value in entries}.get(tag)


def age(channel, tag: str, seconds: float) -> None:
    """Pretend the message was delivered (or last renewed) ``seconds`` ago."""
    channel.client.zadd(channel.unacked_index_key, {tag: time.time() - seconds}, xx=True)


def sweep(channel) -> None:
    """kombu's restore sweep, as a consuming worker runs it every ``unacked_restore_interval``."""
    channel.qos.restore_visible(num=None, interval=1)


def test_a_held_message_renewed_is_not_restored_and_an_unrenewed_one_is(channel):
    held = deliver(channel, "held")
    dead = deliver(channel, "dead")
    assert set(held_tags(channel)) == {held.delivery_tag, dead.delivery_tag}
    age(channel, held.delivery_tag, VISIBILITY + 5)
    age(channel, dead.delivery_tag, VISIBILITY + 5)

    assert renew(channel, [held.delivery_tag]) == 1
    assert score(channel, held.delivery_tag) > time.time() - 2
    sweep(channel)

    # the renewed one is still with its holder; the other is back on the queue for another worker
    assert score(channel, held.delivery_tag) is not None
    assert score(channel, dead.delivery_tag) is None
    back = channel.queue.get(no_ack=False)
    assert back is not None and back.payload == "dead" and back.delivery_info.get("redelivered") is not False
    assert channel.queue.get(no_ack=False) is None


def test_renewal_never_brings_back_an_acknowledged_or_restored_message(channel):
    acked = deliver(channel, "acked")
    restored = deliver(channel, "restored")
    acked.ack()
    age(channel, restored.delivery_tag, VISIBILITY + 5)
    sweep(channel)
    assert score(channel, restored.delivery_tag) is None

    assert renew(channel, [acked.delivery_tag, restored.delivery_tag]) == 0
    assert score(channel, acked.delivery_tag) is None
    assert score(channel, restored.delivery_tag) is None
    assert channel.client.hlen(channel.unacked_key) == 0


def test_the_lease_renews_every_message_its_consumer_holds(channel):
    messages = [deliver(channel, f"m{i}") for i in range(3)]
    for m in messages:
        age(channel, m.delivery_tag, VISIBILITY - 1)
    consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel))
    lease = Lease(consumer, visibility_timeout=VISIBILITY)
    assert lease.renew_once() == 3
    assert all(score(channel, m.delivery_tag) > time.time() - 2 for m in messages)
    messages[0].ack()
    assert lease.renew_once() == 2


def test_the_lease_does_nothing_without_a_channel_or_on_another_broker():
    assert Lease(SimpleNamespace(task_consumer=None), visibility_timeout=15).renew_once() == 0
    amqp_like = SimpleNamespace(task_consumer=SimpleNamespace(channel=SimpleNamespace(qos=SimpleNamespace())))
    assert Lease(amqp_like, visibility_timeout=15).renew_once() == 0


def test_interval_is_a_fifth_of_the_visibility_timeout_within_bounds():
    assert lease_interval(15) == 3.0
    assert lease_interval(1) == 1.0
    assert lease_interval(3600) == 60.0
