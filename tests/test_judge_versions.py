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


# --- the same version in every process (issue 17, point 5) ---------------------------------------------------

JUDGE_MODULE = '''
import logging

log = logging.getLogger(__name__)
LIMIT = {limit}
STOP_WORDS = frozenset({{"lorem", "ipsum", "dolor", "sit", "amet"}})
WEIGHTS = {{"length": 0.5, "stop": [0.25, 0.25]}}


class Client:
    def __init__(self):
        self.calls = 0


client = Client()


def judge(x):
    log.info("judging %s", x)
    client.calls += 1
    words = set(x.output_text.split())
    return WEIGHTS["length"] * (len(x.output_text) < LIMIT) + sum(WEIGHTS["stop"]) * (not words & STOP_WORDS)
'''

VERSION_SCRIPT = '''
import logging, sys
sys.path.insert(0, sys.argv[1])
busy = sys.argv[2] == "busy"
if busy:  # another library configures logging, makes loggers, logs: runtime state, not the judge's logic
    logging.basicConfig(level=logging.DEBUG)
    for name in ("urllib3", "judgemod.child", "celery.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
import judgemod
if busy:
    judgemod.log.info("warming up")
    judgemod.log.isEnabledFor(logging.INFO)
    judgemod.client.calls = 41
from tracejudge.judges.model import CodeJudge
print(CodeJudge(name="stop_words", fn=judgemod.judge).version)
'''


def _version_in_subprocess(module_dir, mode: str, *, hash_seed: str) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", VERSION_SCRIPT, str(module_dir), mode], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_code_judges_version_is_the_same_in_every_process(tmp_path):
    """Two processes with different logging state, string hash seeds and client state compute one version;
    a changed constant changes it. (The old fingerprint hashed the logger's manager and level cache.)"""
    (tmp_path / "judgemod.py").write_text(JUDGE_MODULE.format(limit=2000))
    quiet = _version_in_subprocess(tmp_path, "quiet", hash_seed="1")
    busy = _version_in_subprocess(tmp_path, "busy", hash_seed="2")
    assert quiet == busy

    (tmp_path / "judgemod.py").write_text(JUDGE_MODULE.format(limit=5))
    assert _version_in_subprocess(tmp_path, "quiet", hash_seed="3") != quiet


def test_code_and_plain_data_change_the_version_and_runtime_objects_do_not():
    import logging

    class Cache:
        def __init__(self):
            self.hits = 0

    cache = Cache()
    log = logging.getLogger("tj.test.versions")
    table = {"a": [1, 2], "b": (3, None)}

    def judge(x):
        cache.hits += 1
        log.debug("scoring")
        return 1.0 if table["a"][0] == 1 else 0.0

    same_code = judge

    def judge(x):  # noqa: F811 - same name, another comparison
        cache.hits += 1
        log.debug("scoring")
        return 1.0 if table["a"][0] == 2 else 0.0

    other_code, judge = judge, same_code
    first = CodeJudge(name="t", fn=judge).version
    cache.hits = 99
    log.setLevel(logging.DEBUG)
    logging.getLogger("tj.test.versions.child").info("x")
    assert CodeJudge(name="t", fn=judge).version == first  # runtime state: not the logic
    table["b"] = (3, 4)
    assert CodeJudge(name="t", fn=judge).version != first  # plain data it reads: the logic
    table["b"] = (3, None)
    assert CodeJudge(name="t", fn=judge).version == first
    assert CodeJudge(name="t", fn=other_code).version != first
