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

If the script fails (a server without Lua), the worker logs it once and
fetches with ``BRPOP`` only, as kombu does.
"""

from __future__ import annotations

import logging
from time import monotonic, time
from typing import Any

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

_installed = False


def install() -> None:
    """Patch kombu's Redis channel to fetch atomically (idempotent; producers never call the patched methods).

    >>> install(); install()
    >>> from kombu.transport.redis import Channel
    >>> Channel._brpop_start.__module__
    'tracejudge.worker.fetch'
    """
    global _installed
    if _installed:
        return
    from kombu.transport import redis as kredis

    channel_class = kredis.Channel
    plain_start = channel_class._brpop_start
    plain_read = channel_class._brpop_read

    def _brpop_start(self: Any, timeout: Any = None) -> None:
        if getattr(self, "_tj_fetch_blocking", False) or getattr(self, "_tj_fetch_disabled", False):
            self._tj_fetch_pending = "BRPOP"
            return plain_start(self, timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        prefix = self.global_keyprefix or ""
        keys = [prefix + self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        keys += [prefix + self.unacked_key, prefix + self.unacked_index_key]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self._tj_fetch_pending = "EVAL"
        self.client.connection.send_command("EVAL", FETCH_SCRIPT, len(keys), *keys, f"{time():.6f}")
        return None

    def _brpop_read(self: Any, **options: Any) -> Any:
        if getattr(self, "_tj_fetch_pending", None) != "EVAL":
            self._tj_fetch_blocking = False  # after a blocking wait (a message or its timeout): atomic again
            return plain_read(self, **options)
        self._tj_fetch_pending = None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVAL", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except kredis.redis.ResponseError as exc:
                log.error("atomic fetch disabled (%s); fetching with BRPOP as kombu does", exc)
                self._tj_fetch_disabled = True
                raise kredis.Empty() from exc
            if not reply:
                self._tj_fetch_blocking = True  # every queue empty: wait in BRPOP next
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

    channel_class._brpop_start = _brpop_start
    channel_class._brpop_read = _brpop_read
    _installed = True
