"""What one judge call has cost so far, whatever way it ends (a reply, an error, a timeout, a cancellation).

:class:`CallControls` opens a :class:`CallMeter` around each call (a context variable, so the client finds it
without a parameter through every layer); the client adds the tokens of each reply as it arrives and counts each
request that got no reply (timed out or cancelled after it was sent: the provider bills it anyway). The budget is
then settled at the tokens paid plus one estimated attempt per unanswered request, never $0 for a call that was
sent, and never without the tokens of invalid replies before a later timeout.

>>> with metering() as m:
...     current_meter().add(100, 10)
...     current_meter().unanswered += 1
>>> (m.prompt, m.completion, m.unanswered)
(100, 10, 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class CallMeter:
    prompt: int = 0
    completion: int = 0
    sent: int = 0
    unanswered: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt += prompt
        self.completion += completion


_CURRENT: ContextVar[CallMeter | None] = ContextVar("tracejudge_call_meter", default=None)


def current_meter() -> CallMeter | None:
    """The meter of the judge call running in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def metering() -> Iterator[CallMeter]:
    meter = CallMeter()
    token = _CURRENT.set(meter)
    try:
        yield meter
    finally:
        _CURRENT.reset(token)
