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


class LoopRunner:
    """An event loop running in its own daemon thread; :meth:`run` waits for a coroutine from any thread."""

    def __init__(self, *, name: str = "tracejudge-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result, at most ``timeout`` seconds (then :class:`LoopStalled`);
        cancelled if we stop waiting."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own TimeoutError
                raise
            future.cancel()
            raise LoopStalled(
                f"the evaluation did not finish on the event loop within {timeout:g} s (cancelled); "
                "is a judge blocking the loop?"
            ) from None
        except BaseException:
            future.cancel()
            raise

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs in (the watchdog reads its stack when the loop is blocked)."""
        return self._thread

    def close(self) -> None:
        """Stop the loop (its thread ends); pending coroutines are dropped."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
