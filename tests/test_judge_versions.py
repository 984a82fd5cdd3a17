"""A judge's version covers what it depends on, and every result carries it.

The version is part of the idempotency key, so a version that missed a change
would let results of the old logic be reused.
"""

from __future__ import annotations

import asyncio

from mlflow.genai.scorers import scorer

from tracejudge.config import ExecutionConfig
from tracejudge.judges import CodeJudge, Judge, JudgeInput, JudgeJob, code_judge, run_judges
from tracejudge.judges.mlflow_scorer import scorer_judge

LIMIT = 2000


def _make(threshold):
    def judge(x):
        return 1.0 if len(x.output_text) < threshold else 0.0

    return judge


def test_a_changed_constant_changes_the_version():
    def long_ok(x):
        return 1.0 if len(x.output_text) < 2000 else 0.0

    v1 = CodeJudge(name="short", fn=long_ok).version

    def long_ok(x):  # noqa: F811 - same name, same bytecode, another constant
        return 1.0 if len(x.output_text) < 5 else 0.0

    v2 = CodeJudge(name="short", fn=long_ok).version
    assert v1 != v2


def test_a_changed_closure_changes_the_version():
    assert CodeJudge(name="c", fn=_make(2000)).version != CodeJudge(name="c", fn=_make(5)).version
    assert CodeJudge(name="c", fn=_make(5)).version == CodeJudge(name="c", fn=_make(5)).version


def test_a_changed_global_changes_the_version():
    global LIMIT

    def by_global(x):
        return 1.0 if len(x.output_text) < LIMIT else 0.0

    before = CodeJudge(name="g", fn=by_global).version
    LIMIT = 5
    try:
        after = CodeJudge(name="g", fn=by_global).version
    finally:
        LIMIT = 2000
    assert before != after


def test_a_changed_helper_function_changes_the_version():
    def helper(x):
        return 0.5

    def uses_helper(x):
        return helper(x)

    first = CodeJudge(name="h", fn=uses_helper).version

    def helper(x):  # noqa: F811
        return 0.25

    def uses_helper(x):  # noqa: F811
        return helper(x)

    assert CodeJudge(name="h", fn=uses_helper).version != first


def test_an_explicit_version_wins():
    judge = CodeJudge(name="pinned", fn=_make(5), version="2024-06")
    assert judge.version == "2024-06"

    @code_judge("tj_test_pinned", version="v7")
    def pinned(x):
        return 1.0

    assert pinned.version == "v7"


def test_scorer_judges_of_one_name_differ_by_scorer():
    @scorer
    def first(outputs) -> bool:
        return "42" in str(outputs)

    @scorer
    def second(outputs) -> bool:
        return "43" in str(outputs)

    a = scorer_judge(first, name="answer")
    b = scorer_judge(second, name="answer")
    assert a.version != b.version
    assert scorer_judge(first, name="answer").version == a.version
    assert scorer_judge(second, name="answer", version="x1").version == "x1"


def test_scorer_judge_version_covers_scorer_config():
    class Configured:
        def __init__(self, instructions):
            self.name = "configured"
            self.instructions = instructions

        def __call__(self, *, inputs=None, outputs=None, expectations=None):
            return True

    assert scorer_judge(Configured("be strict")).version != scorer_judge(Configured("be lenient")).version
    assert scorer_judge(Configured("be strict")).version == scorer_judge(Configured("be strict")).version


def test_every_result_carries_its_judge_version():
    llm = Judge(name="t", prompt="Rate {output}")
    code = CodeJudge(name="c", fn=_make(5), version="v3")
    jobs = [
        JudgeJob(judge=code, input=JudgeInput(output="abc"), threshold=0.5),
        JudgeJob(judge=llm, input=JudgeInput(output="abc"), threshold=0.5),  # fails: no client
    ]
    results = asyncio.run(run_judges(jobs, client=None, execution=ExecutionConfig()))
    assert results[0].ok and results[0].judge_version == "v3"
    assert results[1].error is not None and results[1].judge_version == llm.version
