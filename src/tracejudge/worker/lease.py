"""A lease on the messages a live worker holds, so a short visibility timeout is safe on Redis.

Kombu's Redis transport keeps every delivered, unacknowledged message in a
hash (``unacked``) and a sorted set (``unacked_index``) scored by its
delivery time; any consuming worker's sweep (every
``unacked_restore_interval`` s) puts back on its queue each message whose
score is older than ``visibility_timeout``. A dead worker's messages thus
come back after the visibility timeout, and so does a live worker's
evaluation that runs longer than it.

The lease turns that age into "time since the holder last said it is
alive": a thread in the worker's main process (the one that holds the
broker channel, whatever the pool) re-scores, every ``visibility_timeout /
5`` seconds, all the messages its channel has delivered and not
acknowledged (kombu's ``QoS._delivered``: running, reserved-but-not-started
and ETA/countdown ones alike) with ``ZADD XX`` (only members still there:
an acknowledged or already restored message is never brought back). So
with the default visibility timeout of 15 s a SIGKILLed worker's messages
are restored within about 15 + 3 s, and a live worker's never, however
long they run.

What it relies on, and what breaks it:

* the worker machines' clocks agree with each other to well under the
  visibility timeout (kombu scores with the local clock and its sweep
  compares with the sweeper's clock); each renewal compares the local
  clock with Redis's and logs an error past a third of the timeout;
* a worker that cannot reach Redis for a whole visibility timeout loses its
  lease (its messages go to another worker; the per-trace lock and the
  idempotent write-back keep that to duplicate work, never duplicate
  results), the same as RabbitMQ redelivering a dropped connection's
  messages;
* kombu's private ``QoS._delivered`` (kombu 5.x); if it is missing the
  lease logs an error once and the plain visibility timeout applies.

On other transports (RabbitMQ redelivers when the connection drops) it does nothing.

>>> lease_interval(15), lease_interval(900), lease_interval(2)
(3.0, 60.0, 1.0)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Renewals (and restore sweeps) per visibility timeout: a lease survives four missed renewals.
RENEWALS_PER_TIMEOUT = 5
#: Never renew more often than this, nor less often than ``MAX_INTERVAL``.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 60.0
#: How often the local clock is compared with Redis's.
CLOCK_CHECK_SECONDS = 60.0


def lease_interval(visibility_timeout: float) -> float:
    """Seconds between renewals (and between kombu's restore sweeps) for a visibility timeout."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, visibility_timeout / RENEWALS_PER_TIMEOUT))


def held_tags(channel: Any) -> list[str]:
    """Delivery tags the channel has delivered and not acknowledged (acked-but-not-flushed ones too: harmless)."""
    delivered = channel.qos._delivered
    for _ in range(3):  # another thread may append or flush meanwhile
        try:
            return list(delivered)
        except RuntimeError:
            continue
    return list(delivered.copy())


def renew(channel: Any, tags: list[str], *, now: float | None = None) -> int:
    """Re-score ``tags`` in kombu's unacked index to ``now``; only those still there. Returns how many."""
    if not tags:
        return 0
    score = time.time() if now is None else now
    with channel.conn_or_acquire() as client:
        # XX: never re-add a message that was acknowledged or restored meanwhile; CH: count updates
        return int(client.zadd(channel.unacked_index_key, {tag: score for tag in tags}, xx=True, ch=True))


def is_redis_channel(channel: Any) -> bool:
    return hasattr(channel, "unacked_index_key") and hasattr(getattr(channel, "qos", None), "_delivered")


class Lease:
    """Renews the unacked-index entries of one worker's messages while the worker lives.

    ``consumer`` is Celery's worker consumer (``consumer.task_consumer.channel``
    is read on every round, so a reconnect is followed).
    """

    def __init__(self, consumer: Any, *, visibility_timeout: float) -> None:
        self.consumer = consumer
        self.visibility_timeout = visibility_timeout
        self.interval = lease_interval(visibility_timeout)
        self.renewed = 0  #: entries re-scored so far (for tests and logs)
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_clock_check = 0.0
        self._broken = False

    def start(self) -> "Lease":
        self._thread = threading.Thread(target=self._run, name="tracejudge-lease", daemon=True)
        self._thread.start()
        log.info("lease on held messages: renewed every %.1f s (visibility timeout %g s)", self.interval, self.visibility_timeout)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _channel(self) -> Any:
        task_consumer = getattr(self.consumer, "task_consumer", None)
        return getattr(task_consumer, "channel", None)

    def renew_once(self) -> int:
        """One round: re-score every held message. Returns how many entries were re-scored."""
        channel = self._channel()
        if channel is None or self._broken:
            return 0
        if not is_redis_channel(channel):
            if hasattr(channel, "unacked_index_key"):  # Redis, but kombu changed: say so once
                log.error("lease disabled: kombu's Redis QoS has no _delivered; the visibility timeout alone applies")
                self._broken = True
            return 0
        count = renew(channel, held_tags(channel))
        self.renewed += count
        self.rounds += 1
        if time.monotonic() - self._last_clock_check > CLOCK_CHECK_SECONDS:
            self._last_clock_check = time.monotonic()
            self._check_clock(channel)
        return count

    def _check_clock(self, channel: Any) -> None:
        with channel.conn_or_acquire() as client:
            seconds, micros = client.time()
        skew = time.time() - (seconds + micros / 1e6)
        if abs(skew) > self.visibility_timeout / 3:
            log.error(
                "this machine's clock is %.1f s off Redis's; with a visibility timeout of %g s other workers may "
                "redeliver this worker's running tasks (sync the clocks, or raise TRACEJUDGE_VISIBILITY_TIMEOUT)",
                skew, self.visibility_timeout,
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew_once()
            except Exception as exc:  # Redis briefly unreachable: the next round tries again
                log.warning("could not renew the lease on held messages: %s", exc)


_leases: dict[int, Lease] = {}
_lock = threading.Lock()


def start_lease(consumer: Any, *, visibility_timeout: float) -> Lease | None:
    """Start (once per consumer) the lease of a worker whose broker is Redis; None on other brokers."""
    channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
    if channel is not None and not hasattr(channel, "unacked_index_key"):
        return None
    with _lock:
        lease = _leases.get(id(consumer))
        if lease is None or not lease.alive:
            lease = _leases[id(consumer)] = Lease(consumer, visibility_timeout=visibility_timeout).start()
        return lease


def stop_lease(consumer: Any) -> None:
    with _lock:
        lease = _leases.pop(id(consumer), None)
    if lease is not None:
        lease.stop()


def stop_all() -> int:
    """Stop every lease of this process (its event loop is blocked: let other workers have its messages)."""
    with _lock:
        leases = list(_leases.values())
        _leases.clear()
    for lease in leases:
        lease.stop()
    return len(leases)


def lease_for(consumer: Any) -> Lease | None:
    """The running lease of a worker's consumer (tests)."""
    return _leases.get(id(consumer))


def _visibility_timeout(app: Any) -> float:
    options = getattr(app.conf, "broker_transport_options", None) or {}
    return float(options.get("visibility_timeout") or app.conf.get("visibility_timeout") or 3600)


def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """``worker_ready`` (sent with the consumer): start its lease."""
    if sender is not None and getattr(sender, "app", None) is not None:
        start_lease(sender, visibility_timeout=_visibility_timeout(sender.app))


def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    """``worker_shutdown`` (after the pool finished its tasks and acknowledged them): stop the lease."""
    consumer = getattr(sender, "consumer", None)
    if consumer is not None:
        stop_lease(consumer)


def connect_signals() -> None:
    """Hook the lease into every Celery worker of this process (idempotent)."""
    from celery import signals

    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="tracejudge.lease.ready")
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="tracejudge.lease.shutdown")
