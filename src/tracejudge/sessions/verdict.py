"""The verdict on a conversation: a :class:`QualityVerdict` of the session's judges, plus what was judged."""

from __future__ import annotations

from tracejudge.verdict import QualityVerdict


class SessionVerdict(QualityVerdict):
    """A conversation's verdict: ``trace_id`` is the session's first trace (where its results are).

    >>> v = SessionVerdict(trace_id="tr-1", session_id="chat-1", turns=3, status="passed", threshold=0.8)
    >>> v.passed, v.turns
    (True, 3)
    """

    session_id: str
    #: Turns (traces) the results cover, and the last of them.
    turns: int = 0
    last_trace_id: str | None = None

    def summary(self) -> str:
        return f"session {self.session_id} ({self.turns} turns): {super().summary()}"
