"""Judges worth trusting (issue 13): reasoning before the score, anchored rubrics, scoring modes.

Everything that goes over the wire is checked against the local test server, over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tracejudge.config import ExecutionConfig, load_config
from tracejudge.config.errors import ConfigError
from tracejudge.judges import BUILTIN_JUDGES, Judge, JudgeInput, JudgeJob, JudgeRegistry, LLMClient, render, run_judges
from tracejudge.judges import errors
from tracejudge.judges.model import RubricLevel
from tracejudge.testing import FakeLLMServer

RELEVANCE = BUILTIN_JUDGES["relevance"]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(retry_after=0.05) as srv:
        yield srv


def run(server, jobs, **execution):
    config = ExecutionConfig(**execution)

    async def go():
        client = LLMClient(base_url=server.base_url, api_key="sk-test", backoff_initial=0.01, backoff_max=0.02,
                           max_attempts=config.attempts)
        try:
            return await run_judges(jobs, client=client, execution=config)
        finally:
            await client.aclose()

    return asyncio.run(go())


def job(output, judge=RELEVANCE, **fields) -> JudgeJob:
    fields.setdefault("input", "What is the capital of Australia?")
    return JudgeJob(judge=judge, input=JudgeInput(output=output, **fields), threshold=0.5)


# ----------------------------------------------------------------------------- reasoning before the score


def test_schema_and_prompt_sent_put_the_reasoning_before_the_score(server):
    result = run(server, [job("Canberra [[tj:score=0.9]]")])[0]
    assert result.ok and result.score == 0.9

    body = server.requests[-1].body
    schema = body["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["rationale", "score"]  # the order a model writes the keys in
    assert schema["required"] == ["rationale", "score"]
    system = body["messages"][0]["content"]
    # criteria, then the rubric, then: reason first, score last
    assert system.index("Criteria:") < system.index("Scoring rubric") < system.index("first reason step by step")
    assert system.index("first reason step by step") < system.index("only then give the score")
    assert system.index('"rationale"') < system.index('"score"')
    # the levels are shown, each with its description
    for level in RELEVANCE.rubric:
        assert f"{level.score:.2f}: {level.description}" in system


def test_the_fallback_without_schema_bounds_keeps_range_checking_on_our_side():
    with FakeLLMServer(reject_schema_bounds=True) as srv:
        results = run(srv, [job("x [[tj:fault=out_of_range]]"), job("y [[tj:score=0.6]]")], max_attempts=2)
        bodies = [r.body for r in srv.requests]
        statuses = [r.status for r in srv.requests]

    too_high, fine = results
    # the provider refused minimum/maximum: asked again without them, and the 1.7 is still refused by us
    assert too_high.error.type == errors.REPLY_OUT_OF_RANGE and "outside 0..1" in too_high.error.message
    assert fine.ok and fine.score == 0.6
    assert 400 in statuses
    refused = [b for b, s in zip(bodies, statuses) if s == 400]
    accepted = [b for b, s in zip(bodies, statuses) if s == 200]
    assert all("minimum" in b["response_format"]["json_schema"]["schema"]["properties"]["score"] for b in refused)
    assert all("minimum" not in b["response_format"]["json_schema"]["schema"]["properties"]["score"] for b in accepted)
    assert all(list(b["response_format"]["json_schema"]["schema"]["properties"]) == ["rationale", "score"]
               for b in accepted)


# ----------------------------------------------------------------------------- rubrics


def test_every_builtin_judge_has_criteria_and_five_anchored_levels_in_its_prompt():
    full = JudgeInput(output="o", input="i", context=["c"], expected="e", inputs={"topic": "t"})
    for judge in BUILTIN_JUDGES.values():
        system = render(judge, full).messages[0]["content"]
        assert judge.criteria.strip().splitlines()[0] in system
        assert [level.score for level in judge.rubric] == [1.0, 0.75, 0.5, 0.25, 0.0]
        for level in judge.rubric:
            assert f"{level.score:.2f}: {level.description}" in system
        assert "naming that level" in system and "between two levels" in system


def test_changing_a_judges_text_changes_its_version():
    base = Judge(name="t", prompt="Rate {output}", criteria="Check tone.",
                 rubric=(RubricLevel(score=1, description="polite"), RubricLevel(score=0, description="rude")))
    assert base.version != base.model_copy(update={"criteria": "Check tone and length."}).version
    other_level = (RubricLevel(score=1, description="very polite"), RubricLevel(score=0, description="rude"))
    assert base.version != Judge(name="t", prompt="Rate {output}", criteria="Check tone.", rubric=other_level).version
    assert base.version == Judge(name="t", prompt="Rate {output}", criteria="Check tone.",
                                 rubric=tuple(reversed(base.rubric))).version  # same levels, any order


def test_yaml_custom_judge_declares_a_rubric():
    config = load_config({"observability": {"mlflow": {"judges": {
        "workflow_defaults": [{"name": "tone"}],
        "custom": [{
            "name": "tone", "definition": "Is the reply polite?", "grading_prompt": "Rate the tone:\n{output}",
            "criteria": "Politeness only; ignore length.",
            "rubric": [
                {"score": 0.0, "description": "rude or dismissive"},
                {"score": 0.5, "description": "neutral, curt"},
                {"score": 1.0, "description": "warm and polite"},
            ],
            "scoring": "logprobs", "samples": 3,
        }],
    }}}})
    judge = JudgeRegistry().with_config(config).get("tone")
    assert [level.score for level in judge.rubric] == [1.0, 0.5, 0.0]
    assert judge.scoring == "logprobs" and judge.samples == 3
    system = render(judge, JudgeInput(output="hi")).messages[0]["content"]
    assert "Politeness only; ignore length." in system and "0.50: neutral, curt" in system


@pytest.mark.parametrize(
    ("custom", "where"),
    [
        ({"samples": 0}, "samples"),
        ({"samples": 11}, "samples"),
        ({"rubric": [{"score": 1.0, "description": "only one"}]}, "rubric"),
        ({"rubric": [{"score": 1.0, "description": "a"}, {"score": 1.0, "description": "b"}]}, "rubric[1].score"),
        ({"rubric": [{"score": 1.5, "description": "a"}, {"score": 0, "description": "b"}]}, "rubric[0].score"),
        ({"rubric": [{"score": 1.0, "description": " "}, {"score": 0, "description": "b"}]}, "rubric[0].description"),
        ({"scoring": "weighted"}, "scoring"),
    ],
)
def test_bad_rubric_or_scoring_settings_name_the_key(custom, where):
    base = {"name": "tone", "grading_prompt": "Rate {output}"}
    with pytest.raises(ConfigError) as info:
        load_config({"observability": {"mlflow": {"judges": {"custom": [{**base, **custom}]}}}})
    assert where in str(info.value)


def test_samples_out_of_range_is_refused_in_python_and_under_execution():
    with pytest.raises(ValueError, match="samples must be 1 to 10"):
        Judge(name="t", prompt="Rate {output}", samples=11)
    with pytest.raises(ConfigError, match="samples"):
        load_config({"observability": {"mlflow": {"judges": {"execution": {"samples": 0}}}}})


# ----------------------------------------------------------------------------- logprobs (G-Eval)


def test_logprobs_scoring_weights_the_levels_by_probability(server):
    # levels 1..5 are scores 0, .25, .5, .75, 1: the server gives level 3 and 4 half each
    result = run(server, [job("x [[tj:levelprobs=0,0,0.5,0.5,0]]")], scoring="logprobs")[0]
    assert result.ok and result.scoring == "logprobs" and result.scoring_fallback is None
    assert result.score == pytest.approx(0.625)

    body = server.requests[-1].body
    assert body["logprobs"] is True and body["top_logprobs"] >= 5
    schema = body["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["rationale", "level"]
    assert schema["properties"]["level"]["enum"] == [1, 2, 3, 4, 5]
    system = body["messages"][0]["content"]
    assert "5 (score 1.00): " + RELEVANCE.rubric[0].description in system
    assert "1 (score 0.00): " + RELEVANCE.rubric[-1].description in system


def test_logprobs_mode_falls_back_to_the_named_level_and_records_why(server):
    no_logprobs, scored = run(
        server, [job("x [[tj:score=0.75]] [[tj:nologprobs]]"), job("y [[tj:levelprobs=0.2,0,0,0,0.8]]")],
        scoring="logprobs",
    )
    assert no_logprobs.ok and no_logprobs.score == 0.75
    assert no_logprobs.scoring == "direct" and no_logprobs.scoring_fallback == "the endpoint returned no logprobs"
    assert scored.scoring == "logprobs" and scored.score == pytest.approx(0.8)


def test_a_judge_without_a_rubric_uses_the_default_five_levels_in_logprobs_mode(server):
    plain = Judge(name="plain", prompt="Rate {output}", scoring="logprobs")
    result = run(server, [job("x [[tj:levelprobs=0,1,0,0,0]]", judge=plain)])[0]
    assert result.ok and result.score == 0.25 and result.scoring == "logprobs"


def test_direct_scoring_records_its_mode(server):
    result = run(server, [job("x [[tj:score=0.4]]")])[0]
    assert result.scoring == "direct" and result.samples == 1 and result.score_stdev is None
    assert "logprobs" not in server.requests[-1].body


# ----------------------------------------------------------------------------- samples


def test_samples_average_the_replies_and_record_their_spread(server):
    server.script("ok:0.2", "ok:0.4", "ok:0.9")
    result = run(server, [job("x")], samples=3)[0]
    assert result.ok and result.samples == 3
    assert result.score == pytest.approx(0.5)
    assert result.score_stdev == pytest.approx(0.294392, abs=1e-5)  # population stdev of .2, .4, .9
    assert server.stats()["requests"] == 3  # the cost multiplies
    assert result.attempts == 3 and result.tokens.prompt == 3 * _prompt_tokens(server.requests[0])


def test_one_failed_sample_fails_the_judge(server):
    server.script("ok:0.2", "malformed", "ok:0.9")
    result = run(server, [job("x")], samples=3, max_attempts=1)[0]
    assert result.error.type == errors.REPLY_NOT_JSON and result.score is None and result.passed is False


def _prompt_tokens(record) -> int:
    texts = [m["content"] for m in record.body["messages"]]
    return max(1, sum(len(t) for t in texts) // 4)


def test_each_sample_and_scoring_mode_has_its_own_cache_entry(server):
    """With the production controls' result cache, samples must not all come back as the first one's reply."""
    from tracejudge.judges.controls import CallControls
    from tracejudge.judges.pricing import PriceTable

    class MemoryCache:
        def __init__(self):
            self.data = {}

        async def get(self, key):
            return self.data.get(key)

        async def put(self, key, value):
            self.data[key] = value

    cache = MemoryCache()
    controls = CallControls(prices=PriceTable(), cache=cache)
    server.script("ok:0.2", "ok:0.4", "ok:0.9")

    async def go(**execution):
        client = LLMClient(base_url=server.base_url, api_key="sk-test")
        try:
            return await run_judges([job("x")], client=client, execution=ExecutionConfig(**execution), controls=controls)
        finally:
            await client.aclose()

    first = asyncio.run(go(samples=3))[0]
    assert first.score == pytest.approx(0.5) and first.score_stdev > 0 and len(cache.data) == 3
    again = asyncio.run(go(samples=3))[0]  # all three from the cache: no call, the same spread
    assert again.cached and again.score == first.score and server.stats()["requests"] == 3
    asyncio.run(go(scoring="logprobs"))  # another mode is another call
    assert server.stats()["requests"] == 4 and len(cache.data) == 4


def test_the_judge_quality_page_has_a_rubric_row_and_a_labelled_set_for_every_builtin_judge():
    """Issue 19: the new judges' prompts are in the docs' judge-quality table (and each can be calibrated)."""
    from pathlib import Path

    from tracejudge.judges.builtin import BUILTIN_JUDGES
    from tracejudge.judges.session_judges import SESSION_JUDGES

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "judge-quality.md").read_text(encoding="utf-8")
    datasets = root / "src" / "tracejudge" / "judges" / "datasets"
    for name in [*BUILTIN_JUDGES, *SESSION_JUDGES]:
        assert f"\n| `{name}`" in page, f"docs/judge-quality.md has no table row for {name}"
        assert (datasets / f"{name}.jsonl").is_file(), f"no labelled set for {name}"
