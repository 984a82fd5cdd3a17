"""One asyncio event loop per process, in a background thread.

Every task of a worker process (from any Celery pool: threads, prefork
child, solo) submits its judge calls here, so one ``AsyncOpenAI`` client and
one connection pool serve all judge calls of the process.

>>> runner = LoopRunner()
>>> async def two(): return 2
>>> runner.run(two())
2
>>> runner.close()

A wait has a deadline (``timeout``): a coroutine still unfinished then is cancelled and the waiting
thread gets :class:`LoopStalled` (retried later by the retry policy). The coroutine's own deadlines are
callbacks of the loop, so a judge that blocks the loop would hold every waiting thread for ever
without it; the process's watchdog (``ops/watchdog.py``) notices the blocked loop itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopStalled(TimeoutError):
    """A coroutine did not finish on the event loop within its wait's deadline (it was cancelled)."""


#: Why a wait ended when the loop was closed under it (the process is stopping or its runtime was replaced).
CLOSED = "the event loop was closed while the evaluation waited on it (the worker is stopping); retried later"


class LoopRunner:
    """An event loop running in its own daemon thread; :meth:`run` waits for a coroutine from any thread."""

    def __init__(self, *, name: str = "tracejudge-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._thread.start()
        #: the waits in progress: :meth:`close` ends them at once instead of leaving their threads to their deadline
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._closed = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result, at most ``timeout`` seconds (then :class:`LoopStalled`);
        cancelled if we stop waiting."""
        if self._closed:
            coro.close()
            raise LoopStalled(CLOSED)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._pending_lock:
            self._pending.add(future)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done() and not future.cancelled():  # the coroutine's own TimeoutError
                raise
            future.cancel()
            raise LoopStalled(
                f"the evaluation did not finish on the event loop within {timeout:g} s (cancelled); "
                "is a judge blocking the loop?"
            ) from None
        except concurrent.futures.CancelledError:
            if self._closed:  # close() ended this wait: retried later, like a stalled one
                raise LoopStalled(CLOSED) from None
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            with self._pending_lock:
                self._pending.discard(future)

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs in (the watchdog reads its stack when the loop is blocked)."""
        return self._thread

    def close(self) -> None:
        """Stop the loop (its thread ends); pending coroutines are dropped, and the threads waiting for them get
        :class:`LoopStalled` at once (retried later) instead of waiting out their deadline."""
        self._closed = True
        with self._pending_lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
