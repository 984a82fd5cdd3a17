"""The atomic fetch (``tracejudge.worker.fetch``) against a real Redis: a worker that dies mid-fetch loses nothing.

Kombu's plain fetch is ``BRPOP`` followed, once the reply is read, by the
unacked entry; a worker SIGKILLed in between lost the message for good (seen
once in the worker-SIGKILL scenario under load: a trace PENDING for ever). Here
the fetch is sent exactly as the worker's event loop sends it, Redis answers,
and the "worker" dies before reading the reply: the message must be in kombu's
unacked hash, so the restore sweep puts it back on its queue.

The fetch is ours only: our app's connections use our transport, every other
kombu connection in the process (a producer, another app's consumer) and every
``no_ack`` consumer keeps kombu's plain fetch; and the kombu internals it
relies on are checked here against the kombu it was written for.
"""

from __future__ import annotations

import select
import time
import uuid

import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kredis

from tracejudge.worker import fetch
from tracejudge.worker.fetch import AtomicFetchChannel, AtomicFetchTransport

NAME = "fetch-test"


@pytest.fixture()
def options():
    return {"global_keyprefix": f"tjfetch-{uuid.uuid4().hex[:8]}:", "visibility_timeout": 15}


def ours(redis_url: str, options: dict) -> Connection:
    """A connection as our app's worker makes it (``broker_transport`` = our transport)."""
    return Connection(redis_url, transport=AtomicFetchTransport, transport_options=options)


def publish(conn: Connection, body: dict) -> Queue:
    queue = Queue(NAME, Exchange(NAME, type="direct"), routing_key=NAME)
    channel = conn.channel()
    queue(channel).declare()
    Producer(channel).publish(body, exchange=NAME, routing_key=NAME, serializer="json")
    return queue


def fetch_and_die(redis_url: str, options: dict, *, transport=AtomicFetchTransport) -> None:
    """Send the worker's fetch, let Redis answer it, and drop the connection without reading the reply."""
    with Connection(redis_url, transport=transport, transport_options=options) as conn:
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
    with ours(redis_url, options) as conn:
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
        assert channel.tj_blocking is True
        for m in got:
            m.ack()
        assert channel.client.hlen(channel.unacked_key) == 0
        queue(channel).delete()


# --- ours only (issue 17, point 9) ----------------------------------------------------------------------------


def test_our_app_uses_our_transport_and_kombu_itself_is_not_patched(redis_url):
    from celery import Celery

    from tracejudge.config import Settings
    from tracejudge.worker.celery_app import make_app

    plain_start, plain_read = kredis.Channel._brpop_start, kredis.Channel._brpop_read
    app = make_app(Settings.from_env({"TRACEJUDGE_REDIS_URL": redis_url}))
    assert (kredis.Channel._brpop_start, kredis.Channel._brpop_read) == (plain_start, plain_read)
    assert "tracejudge" not in kredis.Channel._brpop_start.__module__
    with app.connection_for_read() as conn:
        assert isinstance(conn.default_channel, AtomicFetchChannel)
    other = Celery("someone-else", broker=redis_url)  # another app in the same process
    with other.connection_for_read() as conn:
        assert type(conn.default_channel) is kredis.Channel
    rabbit = make_app(Settings.from_env({"TRACEJUDGE_REDIS_URL": redis_url, "TRACEJUDGE_BROKER_URL": "amqp://guest@127.0.0.1//"}))
    assert not rabbit.conf.broker_transport  # RabbitMQ keeps its own transport
    tls = make_app(Settings.from_env({"TRACEJUDGE_REDIS_URL": "rediss://:pw@127.0.0.1:6380/0"}))
    assert tls.conf.broker_transport == fetch.TRANSPORT
    with tls.connection_for_write() as conn:  # TLS still on (the URL's ssl_cert_reqs reach kombu)
        assert conn.ssl and conn.ssl.get("ssl_cert_reqs") is not None


def test_a_plain_kombu_connection_in_the_same_process_keeps_kombus_fetch(redis_url, options):
    """Another app's consumer in our process fetches as kombu does (here: dies mid-fetch and loses the
    message, kombu's own behaviour); the old process-wide patch gave it our fetch."""
    from tracejudge.worker.celery_app import make_app
    from tracejudge.config import Settings

    make_app(Settings.from_env({"TRACEJUDGE_REDIS_URL": redis_url}))
    with Connection(redis_url, transport_options=options) as conn:
        queue = publish(conn, {"plain": True})
        channel = conn.channel()
        fetch_and_die(redis_url, options, transport=None)
        assert channel.client.llen(NAME) == 0
        assert channel.client.hlen(channel.unacked_key) == 0  # kombu's plain BRPOP: no entry of ours
        queue(channel).delete()


def test_a_no_ack_consumer_on_our_transport_gets_no_unacked_entry(redis_url, options):
    """A ``no_ack`` consumer (Celery's control replies) is fetched with kombu's BRPOP: nothing would ever
    acknowledge an entry written for it, and kombu's sweep would deliver the message again and again."""
    with ours(redis_url, options) as conn:
        queue = publish(conn, {"reply": 1})
        got = []
        channel = conn.channel()
        channel.basic_consume(NAME, no_ack=True, callback=lambda message: got.append(message), consumer_tag="replies")
        assert not channel.atomic_fetch_applies()
        conn.transport.cycle._register_BRPOP(channel)
        channel._brpop_read()
        assert [m.payload for m in got] == [{"reply": 1}]
        assert channel.client.hlen(channel.unacked_key) == 0
        assert channel.client.zcard(channel.unacked_index_key) == 0
        channel.qos.restore_visible(num=None, interval=1)  # the sweep has nothing to send again
        assert channel.client.llen(NAME) == 0
        # the same channel, once the no_ack consumer is gone, fetches an acknowledged consumer atomically again
        channel.basic_cancel("replies")
        channel.basic_consume(NAME, no_ack=False, callback=lambda message: got.append(message), consumer_tag="tasks")
        assert channel.atomic_fetch_applies()
        queue(channel).delete()


def test_a_producer_on_our_transport_writes_only_the_message(redis_url, options):
    with ours(redis_url, options) as conn:
        publish(conn, {"n": 1})
        channel = conn.channel()
        assert channel.client.llen(NAME) == 1
        assert channel.client.hlen(channel.unacked_key) == 0 and channel.client.zcard(channel.unacked_index_key) == 0
        channel.client.delete(NAME)


# --- the kombu internals the channel relies on -------------------------------------------------------------------

#: sha256 (first 16 hex) of the source of each kombu function the channel overrides or mimics, as read in
#: kombu 5.7.0. A mismatch means kombu changed them: re-read them against worker/fetch.py (the keys and their
#: order, the unacked entry's format, the reply handling), then update the digest here.
KOMBU_INTERNALS = {
    "kombu.transport.redis.Channel._brpop_start": "b8c18935c62e35af",
    "kombu.transport.redis.Channel._brpop_read": "f073dbcb18d71759",
    "kombu.transport.redis.QoS.append": "4b4b426ec8acbe0d",
    "kombu.transport.virtual.base.Channel.basic_consume": "10acbcd002b0b89a",
    "kombu.transport.virtual.base.Channel.basic_cancel": "9bdc3b3dd4c9ac63",
}


def _source_digest(path: str) -> str:
    import hashlib
    import inspect
    import textwrap

    from kombu.utils.imports import symbol_by_name

    module, _, attr = path.rpartition(".")
    module, _, cls = module.rpartition(".")
    fn = getattr(symbol_by_name(f"{module}:{cls}"), attr)
    return hashlib.sha256(textwrap.dedent(inspect.getsource(fn)).encode()).hexdigest()[:16]


def test_the_kombu_internals_the_fetch_relies_on_are_unchanged():
    changed = {path: _source_digest(path) for path, digest in KOMBU_INTERNALS.items() if _source_digest(path) != digest}
    assert not changed, (
        "kombu changed code that tracejudge.worker.fetch overrides or mimics; re-read it against worker/fetch.py "
        f"and update KOMBU_INTERNALS: {changed}"
    )
    for name in ("_q_for_pri", "priority_steps", "active_queues", "unacked_key", "unacked_index_key", "global_keyprefix",
                 "sep", "_flush_brpop_reauth"):
        assert hasattr(kredis.Channel, name), f"kombu's Redis Channel has no {name} any more (worker/fetch.py uses it)"


def test_the_scripts_unacked_entry_is_the_one_kombu_writes(redis_url, options):
    """What the script writes before the reply is read equals what kombu's ``QoS.append`` then writes."""
    import json

    import redis

    with ours(redis_url, options) as conn:
        queue = publish(conn, {"same": "entry"})
        channel = conn.channel()
        channel.basic_consume(NAME, no_ack=False, callback=lambda message: None, consumer_tag="compare")
        for name in ("_queue_cycle", "_tag_to_queue", "_active_queues"):
            assert hasattr(channel, name), name
        conn.transport.cycle._register_BRPOP(channel)
        sock = channel.client.connection._sock
        assert select.select([sock], [], [], 10)[0], "Redis did not answer the fetch"
        peek = redis.Redis.from_url(redis_url)  # the channel's client has the fetch's reply waiting on it
        prefix = options["global_keyprefix"]
        (tag,) = [t.decode() for t in peek.zrange(prefix + channel.unacked_index_key, 0, -1)]
        ours_entry = json.loads(peek.hget(prefix + channel.unacked_key, tag))
        channel._brpop_read()  # kombu's QoS.append overwrites it with its own
        kombus_entry = json.loads(peek.hget(prefix + channel.unacked_key, tag))
        assert ours_entry == kombus_entry
        channel.basic_ack(tag)
        queue(channel).delete()
