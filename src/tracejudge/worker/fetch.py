"""Take a message off a Redis queue and record it as unacknowledged in one atomic step.

Kombu's Redis transport fetches with ``BRPOP`` and only then, after reading
the reply, records the message in its ``unacked`` hash and ``unacked_index``
(``QoS.append``). A worker SIGKILLed between the two (the reply popped from the
queue but still in its socket, or being parsed) loses that message for good:
it is in no queue and in no unacked entry, so no restore sweep brings it back
(seen: one trace PENDING for ever after a worker SIGKILL under load). On a busy
worker that window opens at every fetch, and under CPU load it lasts as long
as the worker's event loop waits for the GIL.

This module makes the fetch atomic while there is work queued: the worker
sends a small Lua script instead of ``BRPOP`` that pops the first message of
the same keys, in the same order, and in the same call writes the entry kombu
would write (``[message, exchange, routing_key]`` under its delivery tag,
scored with the worker's clock). Kombu's ``QoS.append`` then overwrites that
entry with its own, and the lease renews it as usual. Only when every queue
was empty does the worker block in ``BRPOP`` (a script cannot block); a
message that arrives during that wait still goes through kombu's plain path,
so the window remains only for a worker idle at that moment that dies in the
few milliseconds before it reads the reply.

Only our own objects: the fetch lives in a kombu Redis transport of our own
(:class:`AtomicFetchTransport`, its channel :class:`AtomicFetchChannel`),
which ``make_app()`` names as the app's ``broker_transport`` for a
``redis://`` or ``rediss://`` broker. Nothing of kombu is patched: another
Celery app or kombu connection in the same process keeps kombu's own fetch.
And within our app, a fetch from any queue consumed without acknowledgements
(``no_ack``: Celery's control replies, ``inspect``) is kombu's plain
``BRPOP``, since nothing would ever acknowledge an unacked entry written for
it and kombu's sweep would deliver it again. Producers never fetch.

The channel reaches into kombu's Redis channel (``_brpop_start`` /
``_brpop_read``, its queue cycle and unacked keys, ``QoS.append``'s entry
format): ``tests/test_fetch.py`` checks those against the kombu this was
written for and fails when they change.

If the script fails (a server without Lua), the worker logs it once and
fetches with ``BRPOP`` only, as kombu does.
"""

from __future__ import annotations

import logging
from time import monotonic, time
from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kredis

log = logging.getLogger(__name__)

#: KEYS: the queue keys in BRPOP's order, then the unacked hash and the unacked index. ARGV[1]: the score.
FETCH_SCRIPT = """
local n = #KEYS - 2
for i = 1, n do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, m = pcall(cjson.decode, item)
    if ok and type(m) == 'table' and type(m.properties) == 'table' and m.properties.delivery_tag then
      local tag = m.properties.delivery_tag
      local info = m.properties.delivery_info
      local ex, rk = '', ''
      if type(info) == 'table' then
        if type(info.exchange) == 'string' then ex = info.exchange end
        if type(info.routing_key) == 'string' then rk = info.routing_key end
      end
      redis.call('HSET', KEYS[n + 1], tag, '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
      redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
    end
    return {KEYS[i], item}
  end
end
return false
"""

#: The app's ``broker_transport`` on a ``redis://``/``rediss://`` broker (see ``worker/celery_app.py``).
TRANSPORT = "tracejudge.worker.fetch:AtomicFetchTransport"


class AtomicFetchChannel(kredis.Channel):
    """Kombu's Redis channel, fetching atomically for queues consumed with acknowledgements (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: queues consumed with ``no_ack``: fetched with kombu's plain BRPOP, never given an unacked entry
        self.tj_no_ack_queues: set[str] = set()
        #: the next fetch waits in BRPOP (every queue was empty), or the script failed once (no Lua)
        self.tj_blocking = False
        self.tj_disabled = False
        #: what the last ``_brpop_start`` sent: "EVAL" (ours) or "BRPOP" (kombu's)
        self.tj_pending: str | None = None
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self.tj_no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self.tj_no_ack_queues.discard(queue)
        return result

    def atomic_fetch_applies(self) -> bool:
        """Whether the next fetch is our script: every queue fetched is acknowledged, and no wait is due.

        >>> AtomicFetchChannel.atomic_fetch_applies.__qualname__
        'AtomicFetchChannel.atomic_fetch_applies'
        """
        if self.tj_blocking or self.tj_disabled:
            return False
        return not (self.tj_no_ack_queues & set(self.active_queues))

    def _brpop_start(self, timeout: Any = None) -> None:
        if not self.atomic_fetch_applies():
            self.tj_pending = "BRPOP"
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        prefix = self.global_keyprefix or ""
        keys = [prefix + self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        keys += [prefix + self.unacked_key, prefix + self.unacked_index_key]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.tj_pending = "EVAL"
        self.client.connection.send_command("EVAL", FETCH_SCRIPT, len(keys), *keys, f"{time():.6f}")
        return None

    def _brpop_read(self, **options: Any) -> Any:
        if self.tj_pending != "EVAL":
            self.tj_blocking = False  # after a blocking wait (a message or its timeout): atomic again
            return super()._brpop_read(**options)
        self.tj_pending = None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVAL", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except kredis.redis.ResponseError as exc:
                log.error("atomic fetch disabled (%s); fetching with BRPOP as kombu does", exc)
                self.tj_disabled = True
                raise kredis.Empty() from exc
            if not reply:
                self.tj_blocking = True  # every queue empty: wait in BRPOP next
                raise kredis.Empty()
            dest, item = reply
            dest = kredis.bytes_to_str(dest)[len(self.global_keyprefix or ""):].rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.connection._deliver(kredis.loads(kredis.bytes_to_str(item)), dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()


class AtomicFetchTransport(kredis.Transport):
    """Kombu's Redis transport with :class:`AtomicFetchChannel`: the broker transport of our app only."""

    Channel = AtomicFetchChannel


def transport_for(broker_url: str) -> str | None:
    """Our transport for a ``redis://`` or ``rediss://`` broker URL; None for others (RabbitMQ, Sentinel...).

    >>> transport_for("rediss://:pw@redis:6380/0"), transport_for("amqp://rabbit//"), transport_for("sentinel://h:26379")
    ('tracejudge.worker.fetch:AtomicFetchTransport', None, None)
    """
    return TRANSPORT if urlsplit(broker_url).scheme in ("redis", "rediss") else None
