"""The atomic fetch (``tracejudge.worker.fetch``) against a real Redis: a worker that dies mid-fetch loses nothing.

Kombu's plain fetch is ``BRPOP`` followed, once the reply is read, by the
unacked entry; a worker SIGKILLed in between lost the message for good (seen
once in the worker-SIGKILL scenario under load: a trace PENDING for ever). Here
the fetch is sent exactly as the worker's event loop sends it, Redis answers,
and the "worker" dies before reading the reply: the message must be in kombu's
unacked hash, so the restore sweep puts it back on its queue.
"""

from __future__ import annotations

import select
import time
import uuid

import pytest
from kombu import Connection, Exchange, Producer, Queue

from tracejudge.worker import fetch

NAME = "fetch-test"


@pytest.fixture()
def options():
    fetch.install()
    return {"global_keyprefix": f"tjfetch-{uuid.uuid4().hex[:8]}:", "visibility_timeout": 15}


def publish(conn: Connection, body: dict) -> Queue:
    queue = Queue(NAME, Exchange(NAME, type="direct"), routing_key=NAME)
    channel = conn.channel()
    queue(channel).declare()
    Producer(channel).publish(body, exchange=NAME, routing_key=NAME, serializer="json")
    return queue


def fetch_and_die(redis_url: str, options: dict) -> None:
    """Send the worker's fetch, let Redis answer it, and drop the connection without reading the reply."""
    with Connection(redis_url, transport_options=options) as conn:
        channel = conn.channel()
        channel.basic_consume(NAME, no_ack=False, callback=lambda message: None, consumer_tag="dies")
        conn.transport.cycle._register_BRPOP(channel)  # what the worker's event loop does: connect and send the fetch
        sock = channel.client.connection._sock
        readable, _, _ = select.select([sock], [], [], 10)
        assert readable, "Redis did not answer the fetch"
        channel.client.connection.disconnect()  # SIGKILLed: the reply is never read, nothing acknowledged


def test_a_message_taken_by_a_worker_that_dies_before_reading_it_comes_back(redis_url, options):
    body = {"trace": uuid.uuid4().hex}
    with Connection(redis_url, transport_options=options) as conn:
        queue = publish(conn, body)
        channel = conn.channel()
        fetch_and_die(redis_url, options)
        assert channel.client.llen(NAME) == 0  # the dead worker did take it off the queue
        assert channel.client.hlen(channel.unacked_key) == 1, "the message is in no queue and no unacked entry: lost"
        # the dead worker's entry ages past the visibility timeout; kombu's sweep (another worker) restores it
        (tag,) = [t.decode() for t in channel.client.zrange(channel.unacked_index_key, 0, -1)]
        channel.client.zadd(channel.unacked_index_key, {tag: time.time() - 60}, xx=True)
        channel.qos.restore_visible(num=None, interval=1)
        message = queue(channel).get(no_ack=True)
        assert message is not None and message.payload == body
        assert message.delivery_info.get("redelivered") is True or message.headers.get("redelivered") is True
        for key in (NAME, "unacked", "unacked_index"):
            channel.client.delete(key)


def test_the_atomic_fetch_delivers_in_queue_order_and_falls_back_to_a_blocking_wait(redis_url, options):
    with Connection(redis_url, transport_options=options) as conn:
        queue = publish(conn, {"n": 1})
        Producer(conn.channel()).publish({"n": 2}, exchange=NAME, routing_key=NAME, serializer="json")
        got = []
        channel = conn.channel()
        channel.basic_consume(NAME, no_ack=False, callback=lambda message: got.append(message), consumer_tag="lives")
        for _ in range(2):
            conn.transport.cycle._register_BRPOP(channel)
            channel._brpop_read()
        assert [m.payload["n"] for m in got] == [1, 2]
        assert channel.client.hlen(channel.unacked_key) == 2  # held, not acknowledged
        # nothing queued: the script finds nothing and the next fetch is a blocking BRPOP (kombu's own)
        conn.transport.cycle._register_BRPOP(channel)
        with pytest.raises(Exception) as empty:
            channel._brpop_read()
        assert type(empty.value).__name__ == "Empty"
        assert channel._tj_fetch_blocking is True
        for m in got:
            m.ack()
        assert channel.client.hlen(channel.unacked_key) == 0
        queue(channel).delete()
