"""Run an MLflow scorer (``mlflow.genai.scorers``: built-in, ``make_judge`` or ``@scorer``) as a judge.

The scorer becomes a :class:`CodeJudge`: it runs in a thread under our
timeout, and its Feedback becomes a 0..1 score: ``yes``/``True`` -> 1.0,
``no``/``False`` -> 0.0, a number in 0..1 as it is. A scorer error, or a
value we cannot read as a score, is a judge error, never a pass. Nothing
here imports MLflow: the scorer object is passed in.
"""

from __future__ import annotations

from typing import Any

from tracejudge.judges import errors
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.model import CodeJudge, JudgeInput, JudgeReply

YES = frozenset({"yes", "true", "pass", "passed"})
NO = frozenset({"no", "false", "fail", "failed"})


def scorer_judge(
    scorer: Any, *, name: str | None = None, threshold: float | None = None, version: str | None = None
) -> CodeJudge:
    """Wrap an MLflow scorer so it runs like our judges (our timeout, our error handling).

    The judge's version covers the scorer's identity and configuration (its
    class, its fields such as instructions and model, the function of an
    ``@scorer``), unless ``version`` is given.

    >>> from mlflow.genai.scorers import RelevanceToQuery  # doctest: +SKIP
    >>> register_judge(scorer_judge(RelevanceToQuery(), threshold=1.0))  # doctest: +SKIP
    """
    judge_name = name or getattr(scorer, "name", None) or type(scorer).__name__

    def run(x: JudgeInput) -> JudgeReply:
        expectations = {"expected_response": x.expected} if x.expected is not None else None
        # Scorer.run passes each scorer only the arguments it declares
        call = getattr(scorer, "run", scorer)
        feedback = call(inputs=x.input, outputs=x.output, expectations=expectations)
        if isinstance(feedback, list):  # some scorers return one Feedback per span; judge them all
            replies = [_reply(judge_name, f) for f in feedback]
            if not replies:
                raise JudgeError(errors.REPLY_INVALID, f"scorer {judge_name!r} returned no feedback")
            worst = min(replies, key=lambda r: r.score)
            return worst
        return _reply(judge_name, feedback)

    return CodeJudge(
        name=judge_name,
        description=f"MLflow scorer {judge_name}",
        fn=run,
        variables=(),
        threshold=threshold,
        version=version,
        depends_on=[judge_name, scorer, getattr(scorer, "_original_func", None)],
    )


def _reply(name: str, feedback: Any) -> JudgeReply:
    error = getattr(feedback, "error", None)
    if error is not None:
        code = getattr(error, "error_code", None) or type(error).__name__
        message = getattr(error, "error_message", None) or str(error)
        raise JudgeError(errors.JUDGE_EXCEPTION, f"scorer {name!r} failed ({code}): {message}")
    value = getattr(feedback, "value", feedback)
    rationale = getattr(feedback, "rationale", None) or ""
    return JudgeReply(score=_score(name, value), rationale=rationale)


def _score(name: str, value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        if 0.0 <= float(value) <= 1.0:
            return float(value)
        raise JudgeError(errors.REPLY_OUT_OF_RANGE, f"scorer {name!r} returned {value!r}, outside 0..1")
    text = str(getattr(value, "value", value)).strip().lower()
    if text in YES:
        return 1.0
    if text in NO:
        return 0.0
    raise JudgeError(errors.REPLY_INVALID, f"scorer {name!r} returned {value!r}, which is not a score, yes/no or a boolean")
