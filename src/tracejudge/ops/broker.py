"""How deep each queue is and how old its oldest message, read from the broker cheaply.

On RabbitMQ (:func:`read_amqp_queues`) the depth is the broker's own count (a passive ``queue_declare``)
and the age is unknown: ``oldest_age_seconds`` None with messages waiting (:meth:`QueueReading.age_unknown`),
shown as "unknown" and left out of ``tracejudge_oldest_message_age_seconds``, never as 0.

Kombu's Redis transport keeps a queue as a list (``LPUSH`` by producers, ``BRPOP`` by workers, so the
oldest message is at the right end), with one more list per priority step (``<queue>\\x06\\x16<n>``).
One pipelined round trip reads every list's length and its last element; the age comes from the
task payload's ``enqueued_at`` (``tasks.payload.EvaluationRequest``), so a message of another task
has no age. Messages a worker has taken (running, or held for a countdown) are not in the lists.

Used by the metrics (``tracejudge_queue_depth``, ``tracejudge_oldest_message_age_seconds``, at scrape
time) and by ``tracejudge status``.

>>> import fakeredis, json, base64, time
>>> r = fakeredis.FakeRedis()
>>> body = base64.b64encode(json.dumps([[{"trace_id": "tr-1", "enqueued_at": 100.0}], {}, {}]).encode()).decode()
>>> r.lpush("tracejudge.online", json.dumps({"body": body, "properties": {"body_encoding": "base64"}}))
1
>>> read_queues(r, ["tracejudge.gate", "tracejudge.online"], now=130.0)
{'tracejudge.gate': QueueReading(depth=0, oldest_age_seconds=None), 'tracejudge.online': QueueReading(depth=1, oldest_age_seconds=30.0)}
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["QueueReading", "read_amqp_queues", "read_amqp_url", "read_queues", "queue_keys"]

#: kombu's Redis transport: the separator of a priority queue's key, and its priority steps
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class QueueReading:
    """One queue: messages waiting, and the age of the oldest one (None: empty, or no ``enqueued_at``)."""

    depth: int
    oldest_age_seconds: float | None

    @property
    def age_unknown(self) -> bool:
        """Messages wait and their age is not known (RabbitMQ, or messages without ``enqueued_at``).

        >>> QueueReading(3, None).age_unknown, QueueReading(0, None).age_unknown, QueueReading(3, 4.0).age_unknown
        (True, False, False)
        """
        return self.depth > 0 and self.oldest_age_seconds is None


def queue_keys(queue: str, *, prefix: str = "") -> list[str]:
    """The Redis lists of one queue, highest priority first (kombu's ``_q_for_pri``).

    >>> queue_keys("q", prefix="p:")
    ['p:q', 'p:q\\x06\\x163', 'p:q\\x06\\x166', 'p:q\\x06\\x169']
    """
    return [f"{prefix}{queue}" if step == 0 else f"{prefix}{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def read_queues(redis: Any, queues: Sequence[str], *, prefix: str = "", now: float | None = None) -> dict[str, QueueReading]:
    """Depth and oldest message age of each queue, in one pipelined round trip (``LLEN`` + ``LINDEX -1`` per list).

    ``redis`` is a redis-py client of the broker; ``prefix`` the transport's ``global_keyprefix``
    (``TRACEJUDGE_KEY_PREFIX``). Raises redis' errors when the broker does not answer.
    """
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue, prefix=prefix):
            pipe.llen(key)
            pipe.lindex(key, -1)
    replies = pipe.execute()
    now = time.time() if now is None else now
    readings: dict[str, QueueReading] = {}
    per_queue = 2 * len(PRIORITY_STEPS)
    for index, queue in enumerate(queues):
        part = replies[index * per_queue : (index + 1) * per_queue]
        depth = sum(int(n or 0) for n in part[0::2])
        sent = [t for t in (enqueued_at(m) for m in part[1::2] if m) if t is not None]
        readings[queue] = QueueReading(depth=depth, oldest_age_seconds=max(0.0, now - min(sent)) if sent else None)
    return readings


def enqueued_at(message: bytes | str) -> float | None:
    """The ``enqueued_at`` of a kombu message's task payload, or None (another task, another encoding)."""
    try:
        envelope = json.loads(message)
        body = envelope["body"]
        if (envelope.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        value = args[0].get("enqueued_at") if args and isinstance(args[0], dict) else None
        return float(value) if value is not None else None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def read_amqp_queues(connection: Any, queues: Sequence[str]) -> dict[str, QueueReading]:
    """Depth of each queue on an AMQP broker (RabbitMQ), from a passive ``queue_declare`` per queue through
    ``connection`` (a kombu ``Connection``, which the caller owns): the messages ready, not those delivered and
    unacknowledged. A queue nobody declared yet is empty. The age is unknown there (None).

    Raises kombu's ``OperationalError`` when the broker does not answer.
    """
    readings: dict[str, QueueReading] = {}
    for name in queues:
        try:
            declared = connection.default_channel.queue_declare(queue=name, passive=True)
            readings[name] = QueueReading(depth=int(declared.message_count), oldest_age_seconds=None)
        except connection.channel_errors:  # 404: not declared yet (the broker closed the channel: take a new one)
            connection.close()
            connection.connect()
            readings[name] = QueueReading(depth=0, oldest_age_seconds=None)
    return readings


def read_amqp_url(url: str, queues: Sequence[str], *, timeout: float = 2.0) -> dict[str, QueueReading]:
    """:func:`read_amqp_queues` over a connection of its own to ``url`` (an ``amqp://`` broker URL), closed after."""
    from kombu import Connection

    with Connection(url, connect_timeout=timeout) as connection:
        return read_amqp_queues(connection, queues)
