"""``judges.review``: which judged traces go to people, through an MLflow review queue.

.. code-block:: yaml

    judges:
      review:
        queue: judge-review          # the MLflow review queue (created in the trace's experiment)
        when: {status: [failed], near_threshold: 0.05, score_stdev_above: 0.15}
        rate: 0.1                    # share of the matching traces sent (deterministic per trace)
        daily_max: 200               # at most this many a UTC day, all workers together

Reviewers' answers are HUMAN feedback under the judges' names, which ``tracejudge agreement``, the report and
the ``judge_agreement`` alert rule read.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Score, _Count, _Section
from .errors import show

__all__ = ["ReviewConfig", "ReviewWhen"]

VERDICT_STATUSES = ("passed", "failed", "error")


class ReviewWhen(_Section):
    """What makes a judged trace worth a person's look (any one of them)."""

    #: Verdict statuses that send a trace to review.
    status: list[str] = Field(default_factory=lambda: ["failed"])
    #: A judge's score this close to its threshold (either side) sends the trace to review.
    near_threshold: Score | None = None
    #: A judge whose sampled replies spread more than this (``samples`` > 1) sends the trace to review.
    score_stdev_above: Score | None = None

    @field_validator("status")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        for status in value:
            if status not in VERDICT_STATUSES:
                raise ValueError(f"must be verdict statuses among {', '.join(VERDICT_STATUSES)} (got {show(status)})")
        return value


class ReviewConfig(_Section):
    """``judges.review``: send judged traces to people through an MLflow review queue."""

    #: The MLflow review queue's name (none: no review routing).
    queue: str | None = None
    #: Which traces go to review.
    when: ReviewWhen = Field(default_factory=ReviewWhen)
    #: Share of the matching traces sent, 0..1, chosen deterministically from the trace id.
    rate: Score = 1.0
    #: Most traces sent a UTC day, all workers together.
    daily_max: _Count = 200
    #: Reviewers assigned to the queue (at most 10; MLflow's custom queues).
    users: list[str] = Field(default_factory=list)

    @field_validator("daily_max")
    @classmethod
    def _cap(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be a whole number, 0 or more (got {show(value)})")
        return value

    @field_validator("users")
    @classmethod
    def _users(cls, value: list[str]) -> list[str]:
        if len(value) > 10:
            raise ValueError(f"an MLflow review queue takes at most 10 users (got {len(value)})")
        return value
