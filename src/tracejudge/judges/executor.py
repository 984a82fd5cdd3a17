"""Threads for synchronous code judges and MLflow scorers, apart from everything else.

Why not the event loop's default executor: it is shared (DNS look-ups of the
HTTP client run there too), and a timeout does not free a thread, so a few
hung judges used to starve every later one. Here:

- at most ``max_workers`` judge calls run at once per event loop (the rest wait
  for a slot, outside their timeout);
- a call that times out gives its slot back at once; its thread, which Python
  cannot stop, is counted as *hung* until it returns;
- at most ``max_hung`` hung threads are tolerated: past that, code judges fail
  at once with a clear error instead of piling up threads.

So the threads are bounded (``max_workers`` running + ``max_hung`` hung) and a
hung judge never blocks the judges after it.

>>> executor = CodeJudgeExecutor(max_workers=2)
>>> asyncio.run(executor.run(len, "abc", timeout=1.0))
3
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

from tracejudge.judges import errors
from tracejudge.judges.errors import JudgeError

DEFAULT_MAX_WORKERS = 8
DEFAULT_MAX_HUNG = 64


class CodeJudgeTimeout(Exception):
    """The call did not return within its timeout (its thread is now counted as hung)."""


class CodeJudgeExecutor:
    """A bounded set of threads for blocking judge functions; see the module docstring."""

    def __init__(self, *, max_workers: int = DEFAULT_MAX_WORKERS, max_hung: int = DEFAULT_MAX_HUNG) -> None:
        if max_workers < 1 or max_hung < 0:
            raise ValueError("max_workers must be >= 1 and max_hung >= 0")
        self.max_workers = max_workers
        self.max_hung = max_hung
        self._lock = threading.Lock()
        self._hung = 0
        self._running = 0
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def hung(self) -> int:
        """Threads whose call timed out and that have not returned yet."""
        return self._hung

    @property
    def running(self) -> int:
        """Threads running a call that has not timed out."""
        return self._running

    async def run(self, fn: Callable[[Any], Any], arg: Any, *, timeout: float) -> Any:
        """``fn(arg)`` in a thread of its own; :class:`CodeJudgeTimeout` after ``timeout`` s."""
        async with self._slot():
            with self._lock:
                if self._hung >= self.max_hung:
                    raise JudgeError(
                        errors.TIMEOUT,
                        f"{self._hung} code judge call(s) of this process timed out and are still running; "
                        "refusing to start more until they return (fix the judge that hangs)",
                    )
                self._running += 1
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Any] = loop.create_future()
            call = _Call()

            def target() -> None:
                try:
                    value, failure = fn(arg), None
                except BaseException as exc:  # handed to the awaiting coroutine
                    value, failure = None, exc
                with self._lock:
                    if call.abandoned:
                        self._hung -= 1
                    else:
                        call.finished = True
                        self._running -= 1
                try:
                    loop.call_soon_threadsafe(_settle, future, value, failure)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

            threading.Thread(target=target, name="tracejudge-code-judge", daemon=True).start()
            limit = asyncio.timeout(timeout)
            try:
                async with limit:
                    return await future
            except BaseException:
                with self._lock:
                    if not call.finished:  # timed out or cancelled: the thread runs on, unowned
                        call.abandoned = True
                        self._running -= 1
                        self._hung += 1
                if limit.expired():
                    raise CodeJudgeTimeout(f"no return within {timeout:g} s") from None
                raise

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            semaphore = self._slots.get(loop)
            if semaphore is None:
                semaphore = self._slots[loop] = asyncio.Semaphore(self.max_workers)
        return semaphore


class _Call:
    __slots__ = ("abandoned", "finished")

    def __init__(self) -> None:
        self.abandoned = False
        self.finished = False


def _settle(future: asyncio.Future[Any], value: Any, failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(value)


_default: CodeJudgeExecutor | None = None
_default_lock = threading.Lock()


def default_code_executor() -> CodeJudgeExecutor:
    """The process-wide executor for code judges (:data:`DEFAULT_MAX_WORKERS` running at once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = CodeJudgeExecutor()
        return _default
