"""``judges.sessions``: which judges see whole conversations, and when a conversation counts as idle.

Traces that share MLflow's session id (trace metadata ``mlflow.trace.session``) are one
conversation. Session judges read the ordered turns (``{conversation}``) and, if they ask,
the tool calls of each turn (``{conversation_tool_calls}``)::

    sessions:
      judges: [conversation_completeness, user_frustration, {name: knowledge_retention, threshold: 0.7}]
      idle_seconds: 600

A custom session judge is an ordinary ``custom`` judge whose prompt uses ``{conversation}``.
Pick-up judges a session of an ``online.experiments`` experiment once no new turn has
arrived for ``idle_seconds``, and again (superseding) when it grows.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import _AtLeastOne, _Seconds, _Section, no_repeated_judges

__all__ = ["SessionsConfig"]


class SessionsConfig(_Section):
    """``judges.sessions``: the session judges and the idle time after which pick-up judges a conversation.

    >>> SessionsConfig.model_validate({"judges": ["user_frustration"], "idle_seconds": 60}).judges[0].name
    'user_frustration'
    >>> SessionsConfig().enabled
    False
    """

    # (``JudgeRef`` is resolved by models.py, which imports this module, when it rebuilds this model.)
    #: The judges of whole conversations: built-in (conversation_completeness, user_frustration, knowledge_retention) or `custom` judges whose prompt uses `{conversation}`.
    judges: list["JudgeRef"] = Field(default_factory=list)  # noqa: F821
    #: Pick-up judges a session once no new turn has arrived for this long (and again when it grows).
    idle_seconds: _Seconds = 600.0
    #: Most sessions one pick-up scan enqueues per experiment (the rest wait for the next scan).
    max_per_scan: _AtLeastOne = 200

    @field_validator("judges")
    @classmethod
    def _unique(cls, value: list["JudgeRef"]) -> list["JudgeRef"]:  # noqa: F821
        no_repeated_judges(value)
        return value

    @property
    def enabled(self) -> bool:
        """Whether any session judge is configured."""
        return bool(self.judges)

