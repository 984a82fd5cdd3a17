"""Watch an event loop from outside: how late it runs a callback, and what to do when it is blocked.

Every evaluation of a worker process runs its judge calls on one event loop (``tasks/loop.py``). An
async code judge that blocks it (``time.sleep``, a busy loop, a blocking client) stalls every
evaluation of the process, and nothing inside the loop can notice: its timeouts are callbacks of the
loop itself. So a small thread posts a probe callback to the loop every ``interval`` seconds and
measures how long it waits to run (the loop's lag; ``tracejudge_event_loop_lag_seconds``). Once the lag
reaches ``block_seconds`` the loop counts as blocked: ``on_blocked(lag, stack)`` is called once, with
the loop thread's stack (where it is stuck), and :attr:`LoopWatchdog.blocked` stays true.

>>> import asyncio, threading, time
>>> loop = asyncio.new_event_loop(); t = threading.Thread(target=loop.run_forever, daemon=True); t.start()
>>> seen = []
>>> dog = LoopWatchdog(loop, block_seconds=0.3, interval=0.05, on_blocked=lambda lag, stack: seen.append(lag)).start()
>>> _ = loop.call_soon_threadsafe(time.sleep, 1.0)  # a callback that blocks the loop for a second
>>> dog.wait_blocked(5.0), seen[0] >= 0.3
(True, True)
>>> dog.stop(); _ = loop.call_soon_threadsafe(loop.stop)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

from tracejudge.ops import metrics

log = logging.getLogger(__name__)

__all__ = ["LoopWatchdog"]


class LoopWatchdog:
    """A daemon thread measuring ``loop``'s lag; calls ``on_blocked`` once when it reaches ``block_seconds``.

    ``on_tick(watchdog)`` (optional) runs after every measurement (e.g. to write the process's health file).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        block_seconds: float,
        interval: float = 0.5,
        loop_thread: threading.Thread | None = None,
        on_blocked: Callable[[float, str], None] | None = None,
        on_tick: Callable[[LoopWatchdog], None] | None = None,
    ) -> None:
        self.loop = loop
        self.block_seconds = float(block_seconds)
        self.interval = min(float(interval), self.block_seconds / 4)
        self.loop_thread = loop_thread
        self.on_blocked = on_blocked
        self.on_tick = on_tick
        self.lag = 0.0  #: the loop's current lag (seconds): how late the last probe ran, or how long the pending one waits
        self._pending: float | None = None
        self._blocked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def blocked(self) -> bool:
        """The loop has been blocked for ``block_seconds`` (stays true: the process is to be replaced)."""
        return self._blocked.is_set()

    @property
    def alive(self) -> bool:
        """The watchdog runs and the loop's thread (when known) is alive."""
        running = self._thread is not None and self._thread.is_alive()
        return running and (self.loop_thread is None or self.loop_thread.is_alive())

    def start(self) -> LoopWatchdog:
        self._thread = threading.Thread(target=self._run, name="tracejudge-loop-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def wait_blocked(self, timeout: float) -> bool:
        """Wait until the loop counts as blocked (tests); True if it does within ``timeout``."""
        return self._blocked.wait(timeout)

    def check(self) -> float:
        """One measurement: post a probe unless one is pending, and return the lag."""
        now = time.monotonic()
        if self._pending is None:
            self._pending = now
            try:
                self.loop.call_soon_threadsafe(self._answer, now)
            except RuntimeError:  # the loop was closed: nothing left to watch
                self._pending = None
                self._stop.set()
                return self.lag
        else:
            self.lag = now - self._pending
        metrics.set_event_loop_lag(self.lag)
        if self.lag >= self.block_seconds and not self._blocked.is_set():
            self._blocked.set()
            stack = self.loop_stack()
            log.error(
                "the event loop has been blocked for %.1f s (bound %g s, TRACEJUDGE_LOOP_BLOCK_SECONDS): every evaluation "
                "of this process is stalled. An async judge must not block (use a plain `def` judge, or await). "
                "The loop is at:\n%s", self.lag, self.block_seconds, stack,
            )
            if self.on_blocked is not None:
                self.on_blocked(self.lag, stack)
        return self.lag

    def loop_stack(self) -> str:
        """Where the loop's thread is now (its Python stack), or '' when the thread is unknown."""
        ident = getattr(self.loop_thread, "ident", None)
        frame = sys._current_frames().get(ident) if ident is not None else None
        return "".join(traceback.format_stack(frame)) if frame is not None else ""

    def _answer(self, posted: float) -> None:
        self.lag = time.monotonic() - posted
        self._pending = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
                if self.on_tick is not None:
                    self.on_tick(self)
            except Exception as exc:  # never let the watchdog die of a hook's failure
                log.warning("loop watchdog: %s", exc)
