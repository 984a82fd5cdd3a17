"""Conversations: judging the traces of one MLflow session as a whole.

:func:`evaluate_session` judges one session (on request: ``tracejudge.enqueue_session``;
by pick-up: :mod:`~tracejudge.sessions.pickup`; by ``tracejudge backfill --sessions``) and
writes one valid result per (session, judge) on the session's first trace, superseding the
result of an earlier, shorter conversation.
"""

from tracejudge.sessions.entry import run_session_task
from tracejudge.sessions.evaluate import evaluate_session
from tracejudge.payload import SessionRequest
from tracejudge.sessions.verdict import SessionVerdict

__all__ = ["SessionRequest", "SessionVerdict", "evaluate_session", "run_session_task"]
