"""MLflow scorers run as judges: value mapping, errors, and our runner around them."""

from __future__ import annotations

import asyncio

from mlflow.entities import AssessmentError, Feedback
from mlflow.genai.scorers import scorer

from tracejudge.config import ExecutionConfig
from tracejudge.judges import JudgeInput, JudgeJob, run_judges
from tracejudge.judges.mlflow_scorer import scorer_judge


@scorer
def mentions_42(outputs) -> bool:
    return "42" in str(outputs)


@scorer
def polite(outputs) -> Feedback:
    return Feedback(value="yes" if "please" in str(outputs) else "no", rationale="looked for 'please'")


@scorer
def broken(outputs) -> Feedback:
    return Feedback(error=AssessmentError(error_code="UPSTREAM", error_message="scorer model down"))


@scorer
def too_big(outputs) -> int:
    return 5


def _run(judge, output):
    job = JudgeJob(judge=judge, input=JudgeInput(output=output, input="q"), threshold=0.5)
    return asyncio.run(run_judges([job], client=None, execution=ExecutionConfig()))[0]


def test_boolean_and_yes_no_scorers_become_scores():
    assert _run(scorer_judge(mentions_42), "it is 42").score == 1.0
    result = _run(scorer_judge(polite, name="politeness"), "no thanks")
    assert result.name == "politeness" and result.score == 0.0 and result.rationale == "looked for 'please'"
    assert result.passed is False and result.model == "code"


def test_scorer_errors_and_bad_values_are_judge_errors_not_passes():
    failed = _run(scorer_judge(broken), "x")
    assert failed.error.type == "JUDGE_EXCEPTION" and "scorer model down" in failed.error.message and not failed.passed
    assert _run(scorer_judge(too_big), "x").error.type == "REPLY_OUT_OF_RANGE"
