"""Non-blocking enqueue: a background sender with a bounded buffer.

``tracejudge.enqueue(trace_id, block=False)`` costs the caller microseconds:
it builds the small payload, puts it on a bounded in-memory buffer and
returns a :class:`QueuedHandle` whose ``id`` (the Celery task id) is fixed
before anything is sent. One background thread per process takes payloads
off the buffer and sends them to Redis exactly as the blocking ``enqueue``
does (same payload, queue and task id).

Nothing is dropped silently:

* **buffer full**: ``on_full="block"`` (the default) waits up to
  ``put_timeout`` seconds for room, then raises :class:`BufferFull`;
  ``on_full="raise"`` raises at once. ``BufferFull`` is an ``EnqueueError``
  and the message was not queued.
* **broker unreachable**: a message is retried with backoff until
  ``retry_for`` seconds after it was enqueued; then it is given up and
  reported: logged at ERROR, counted in :meth:`Sender.stats`, listed in
  :meth:`Sender.errors`, passed to ``on_error`` (if given) and kept on its
  handle (``handle.error``; ``handle.verdict()`` raises it).
* **interpreter exit**: an ``atexit`` hook flushes the buffer, waiting at most
  ``exit_timeout`` seconds; whatever is still unsent then is logged at ERROR
  with its evaluation ids.

>>> handle = tracejudge.enqueue(trace_id, block=False)   # doctest: +SKIP
>>> handle.id                                            # known before the send
'5c0e...'
>>> tracejudge.sender.get_sender().flush(timeout=5)      # doctest: +SKIP
True

The first ``block=False`` call starts the sender and imports the send path
(about as long as a first blocking ``enqueue``); call :func:`get_sender` at
start-up to pay that early. A forked child makes its own sender on first use.

Why the caller path is kept free of system calls: a background thread that
wants the GIL gets it whenever the caller releases it, and ``uuid.uuid4()``
(``os.urandom``) releases it. The sender would then run its ~0.5 ms of
Celery code before the caller got the GIL back. So ids come from
:func:`new_evaluation_id` (a private, fork-safe PRNG; no system call).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tracejudge.publish import EnqueueError, EvaluationHandle, EvaluationTimeout, send_request
from tracejudge.verdict import QualityVerdict

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 10_000
DEFAULT_PUT_TIMEOUT = 1.0
DEFAULT_RETRY_FOR = 30.0
DEFAULT_EXIT_TIMEOUT = 10.0
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 2.0
#: While the broker is failing, a message already past ``retry_for`` is failed
#: without a new attempt if the last attempt failed less than this long ago.
PROBE_INTERVAL = 1.0
#: How many failures :meth:`Sender.errors` keeps (the count in ``stats`` is exact).
MAX_KEPT_ERRORS = 1000

OnFull = Literal["block", "raise"]

_BUFFERED, _SENT, _FAILED = 0, 1, 2

_ids = random.Random()  # seeded from os.urandom; reseeded in forked children below


def new_evaluation_id() -> str:
    """A random (version 4) UUID as 32 hex digits, without a system call.

    >>> len(new_evaluation_id()), new_evaluation_id()[12]
    (32, '4')
    """
    n = _ids.getrandbits(128)
    n = (n & ~(0xF000 << 64)) | (4 << 76)  # version 4
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    return f"{n:032x}"


class BufferFull(EnqueueError):
    """The sender's buffer stayed full: this evaluation was not queued."""


@dataclass(frozen=True)
class SendFailure:
    """One evaluation the sender gave up on: it never reached the broker."""

    evaluation_id: str
    trace_id: str
    error: str
    enqueued_at: float
    failed_at: float
    attempts: int


class QueuedHandle(EvaluationHandle):
    """The handle of an evaluation handed to the background sender.

    ``id`` is the Celery task id, fixed before sending. :meth:`sent` says
    whether it reached the broker, ``error`` why it did not; :meth:`verdict`
    first waits for the send (within its timeout), then for the verdict.
    """

    def __init__(self, request: Any, *, config: Any, sender: Sender) -> None:
        # No AsyncResult yet: building one touches Celery's backend (not for the hot path).
        self.id = request.evaluation_id
        self.trace_id = request.trace_id
        self.config = config
        self.error: EnqueueError | None = None
        self._request = request
        self._sender = sender
        self._state = _BUFFERED
        self._enqueued_at = time.monotonic()
        self._async_result: Any = None

    def __repr__(self) -> str:
        return f"QueuedHandle(id={self.id!r}, trace_id={self.trace_id!r}, status={self.status!r})"

    @property
    def _result(self) -> Any:  # type: ignore[override]
        if self._async_result is None:
            from tracejudge.worker import get_app

            self._async_result = get_app().AsyncResult(self.id)
        return self._async_result

    def sent(self) -> bool:
        """True once the message is on the broker (False while buffered, or if it was given up)."""
        return self._state == _SENT

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Wait until the sender is done with this message; True if it was sent."""
        self._sender._wait_for(lambda: self._state != _BUFFERED, timeout)
        return self._state == _SENT

    @property
    def status(self) -> str:
        if self._state == _FAILED:
            return "SEND_FAILED"
        if self._state == _BUFFERED:
            return "BUFFERED"
        return super().status

    def ready(self) -> bool:
        if self._state == _FAILED:
            return True
        return self._state == _SENT and super().ready()

    @property
    def queue(self) -> str:  # type: ignore[override]
        """The queue it is sent to."""
        from tracejudge.worker.names import QUEUE_GATE, QUEUE_ONLINE

        return QUEUE_GATE if self._request.gate else QUEUE_ONLINE

    def verdict(self, timeout: float | None = 60.0, *, raise_on_block: bool = True, check_workers: bool = True) -> QualityVerdict:
        """Wait for the send and then the verdict (one ``timeout`` for both); raises ``EnqueueError`` if it was given up."""
        started = time.monotonic()
        self.wait_sent(timeout)
        if self._state == _FAILED:
            assert self.error is not None
            raise self.error
        if self._state == _BUFFERED:
            raise EvaluationTimeout(
                f"evaluation {self.id} of trace {self.trace_id} was still in the sender's buffer after {timeout} s"
            )
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        return super().verdict(remaining, raise_on_block=raise_on_block, check_workers=check_workers)


_STOP = object()


class Sender:
    """A background thread that sends evaluations, fed by a bounded buffer.

    ``max_buffer``: messages held at most (default 10,000; each is a few hundred bytes).
    ``on_full``: ``"block"`` waits up to ``put_timeout`` s for room, then raises
    :class:`BufferFull`; ``"raise"`` raises at once.
    ``retry_for``: seconds after enqueueing during which a message is retried
    while the broker is unreachable.
    ``on_error``: called (in the sender thread) with each :class:`SendFailure`.
    ``exit_timeout``: the longest the ``atexit`` flush waits.
    ``send``: sends one request (default: what the blocking ``enqueue`` does; tests may replace it).
    """

    def __init__(
        self,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        on_full: OnFull = "block",
        put_timeout: float = DEFAULT_PUT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        on_error: Callable[[SendFailure], Any] | None = None,
        exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
        send: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        _validate(max_buffer=max_buffer, on_full=on_full)
        self.max_buffer = max_buffer
        self.on_full = on_full
        self.put_timeout = put_timeout
        self.retry_for = retry_for
        self.on_error = on_error
        self.exit_timeout = exit_timeout
        self._send_fn = send
        # Queue.unfinished_tasks counts messages submitted and not yet sent or given up.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_buffer)
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)  # notified whenever a message is finished
        self._sent = 0
        self._failed = 0
        self._retries = 0
        self._rejected = 0
        self._errors: collections.deque[SendFailure] = collections.deque(maxlen=MAX_KEPT_ERRORS)
        self._last_failure_at: float | None = None
        self._last_error = ""
        self._closed = False
        self._current: QueuedHandle | None = None
        self.pid = os.getpid()
        if send is None:
            _warm_send_path()
        self._thread = threading.Thread(target=self._run, name="tracejudge-sender", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # ------------------------------------------------------------------ caller side

    def submit(self, request: Any, config: Any) -> QueuedHandle:
        """Buffer one :class:`EvaluationRequest`; returns its handle at once (see ``on_full``)."""
        if self._closed:
            raise EnqueueError(f"could not enqueue trace {request.trace_id}: the sender is closed")
        handle = QueuedHandle(request, config=config, sender=self)
        try:
            if self.on_full == "raise":
                self._queue.put_nowait(handle)
            else:
                self._queue.put(handle, timeout=self.put_timeout)
        except queue.Full:
            with self._lock:
                self._rejected += 1
            waited = "" if self.on_full == "raise" else f" for {self.put_timeout:g} s"
            raise BufferFull(
                f"could not enqueue trace {request.trace_id}: the sender's buffer is full "
                f"({self.max_buffer} messages, waited{waited or ' not at all'}); the broker is slow or "
                f"unreachable (last error: {self._last_error or 'none'})"
            ) from None
        return handle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message submitted so far is sent or given up; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def close(self, timeout: float | None = DEFAULT_EXIT_TIMEOUT) -> bool:
        """Refuse new messages, flush (bounded), stop the thread; True if every message was handled.

        If the flush times out, the unsent messages are logged at ERROR and the
        thread keeps trying them in the background.
        """
        self._closed = True
        flushed = self.flush(timeout)
        if flushed:
            self._queue.put(_STOP)
            self._thread.join(timeout=5)
            atexit.unregister(self._at_exit)
        else:
            self._report_unsent("closing the sender")
        return flushed

    def errors(self) -> list[SendFailure]:
        """The messages given up on (the last ``MAX_KEPT_ERRORS``; ``stats()['failed']`` counts all)."""
        with self._lock:
            return list(self._errors)

    def stats(self) -> dict[str, Any]:
        """Counters: sent, failed, pending (submitted, not finished), retries, rejected (buffer full), last_error."""
        with self._lock:
            return {
                "sent": self._sent,
                "failed": self._failed,
                "pending": self._queue.unfinished_tasks,
                "retries": self._retries,
                "rejected": self._rejected,
                "max_buffer": self.max_buffer,
                "last_error": self._last_error,
            }

    def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        with self._done:
            return self._done.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ sender thread

    def _send(self, request: Any, config: Any) -> None:
        if self._send_fn is not None:
            self._send_fn(request, config)
            return
        send_request(request, config)

    def _run(self) -> None:
        while True:
            handle = self._queue.get()
            if handle is _STOP:
                self._queue.task_done()
                return
            try:
                self._deliver(handle)
            except BaseException as exc:  # never let the thread die with messages pending
                if handle._state == _BUFFERED:
                    self._finish(handle, EnqueueError(f"could not enqueue trace {handle.trace_id}: {exc!r}"), 1)

    def _deliver(self, handle: QueuedHandle) -> None:
        attempts = 0
        pause = BACKOFF_INITIAL
        self._current = handle
        while True:
            now = time.monotonic()
            expired = now - handle._enqueued_at >= self.retry_for
            recent_failure = self._last_failure_at is not None and now - self._last_failure_at < PROBE_INTERVAL
            if expired and (attempts or recent_failure):
                # The broker is still failing and this message is past its retry window: report it.
                self._finish(handle, EnqueueError(
                    f"could not enqueue trace {handle.trace_id} (evaluation {handle.id}) "
                    f"within {self.retry_for:g} s: {self._last_error}"
                ), attempts)
                return
            attempts += 1
            try:
                self._send(handle._request, handle.config)
            except EnqueueError as exc:  # the broker is unreachable: retry within the window
                message = str(exc) or repr(exc)
                with self._lock:
                    self._retries += 1
                    self._last_failure_at = time.monotonic()
                    self._last_error = message
                if attempts == 1:
                    log.warning("tracejudge sender: sending %s failed, retrying for up to %g s: %s",
                                handle.trace_id, self.retry_for, message)
                left = self.retry_for - (time.monotonic() - handle._enqueued_at)
                if left > 0:
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, BACKOFF_MAX)
                continue
            except Exception as exc:  # not an outage (a bug): retrying would not help
                self._finish(handle, EnqueueError(
                    f"could not enqueue trace {handle.trace_id}: {type(exc).__name__}: {exc}"
                ), attempts)
                return
            self._finish(handle, None, attempts)
            return

    def _finish(self, handle: QueuedHandle, error: EnqueueError | None, attempts: int) -> None:
        failure = None
        if error is not None:
            failure = SendFailure(
                evaluation_id=handle.id,
                trace_id=handle.trace_id,
                error=str(error),
                enqueued_at=time.time() - (time.monotonic() - handle._enqueued_at),
                failed_at=time.time(),
                attempts=attempts,
            )
            log.error("tracejudge sender: gave up on evaluation %s of trace %s: %s",
                      handle.id, handle.trace_id, failure.error)
        with self._done:
            if failure is None:
                self._sent += 1
                self._last_failure_at = None
                handle._state = _SENT
            else:
                self._failed += 1
                self._errors.append(failure)
                handle.error = error
                handle._state = _FAILED
            self._current = None
            self._done.notify_all()
        self._queue.task_done()
        if failure is not None and self.on_error is not None:
            try:
                self.on_error(failure)
            except Exception:
                log.exception("tracejudge sender: the on_error callback raised")

    # ------------------------------------------------------------------ exit

    def _at_exit(self) -> None:
        if os.getpid() != self.pid:
            return
        pending = self._queue.unfinished_tasks
        if pending:
            log.info("tracejudge sender: flushing %d evaluation(s) before exit (up to %g s)", pending, self.exit_timeout)
        self.close(self.exit_timeout)

    def _report_unsent(self, when: str) -> None:
        with self._queue.mutex:
            unsent = [h for h in self._queue.queue if isinstance(h, QueuedHandle)]
        current = self._current
        if current is not None:
            unsent.insert(0, current)
        ids = ", ".join(f"{h.id} (trace {h.trace_id})" for h in unsent[:50])
        more = f" and {len(unsent) - 50} more" if len(unsent) > 50 else ""
        log.error(
            "tracejudge sender: %s with %d evaluation(s) not sent (last error: %s): %s%s",
            when, len(unsent), self._last_error or "none; the broker is slow", ids, more,
        )


def _validate(*, max_buffer: int = DEFAULT_MAX_BUFFER, on_full: str = "block", **_: Any) -> None:
    if max_buffer < 1:
        raise ValueError(f"max_buffer must be 1 or more (got {max_buffer})")
    if on_full not in ("block", "raise"):
        raise ValueError(f"on_full must be 'block' or 'raise' (got {on_full!r})")


def _warm_send_path() -> None:
    """Import everything a send needs, now, in the caller's thread.

    The ``atexit`` flush runs after ``threading`` has shut down; a first
    import of ``concurrent.futures.thread`` then (Celery and redis-py pull it
    in lazily) raises "can't register atexit after shutdown". So the send
    path is imported when the sender starts, never lazily during the flush.
    """
    import concurrent.futures.thread  # noqa: F401

    import celery.backends.redis  # noqa: F401
    import kombu.exceptions  # noqa: F401
    import kombu.transport.redis  # noqa: F401
    import redis.exceptions  # noqa: F401

    from tracejudge.worker import get_app

    app = get_app()
    app.amqp  # noqa: B018  (Celery's message machinery and its imports)
    app.backend  # noqa: B018


_sender: Sender | None = None
_sender_lock = threading.Lock()
_sender_options: dict[str, Any] = {}


def get_sender() -> Sender:
    """The process's sender, started on first use (and again in a forked child or after ``close``)."""
    global _sender
    sender = _sender
    if sender is not None and sender.pid == os.getpid() and not sender._closed:
        return sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid() or _sender._closed:
            _sender = Sender(**_sender_options)
        return _sender


def configure_sender(**options: Any) -> Sender:
    """Replace the process's sender with one built with ``options`` (see :class:`Sender`).

    The old one is flushed and closed first (bounded by its ``exit_timeout``).
    """
    global _sender
    _validate(**options)
    with _sender_lock:
        old, _sender = _sender, None
        _sender_options.clear()
        _sender_options.update(options)
    if old is not None and old.pid == os.getpid():
        old.close(old.exit_timeout)
    return get_sender()


def submit(request: Any, config: Any) -> QueuedHandle:
    """Buffer one request on the process's sender (what ``enqueue(..., block=False)`` calls)."""
    return get_sender().submit(request, config)


def _after_fork_in_child() -> None:
    global _sender
    _sender = None
    _ids.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = [
    "BufferFull",
    "QueuedHandle",
    "SendFailure",
    "Sender",
    "configure_sender",
    "get_sender",
    "new_evaluation_id",
    "submit",
]
