"""run_judges against the bundled fake server: concurrency, isolation of failures, code judges, deadlines.

Overlap and bounds are proven from the server's own records (``stats()``),
never from wall-clock durations.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest

from tracejudge.config import ExecutionConfig
from tracejudge.judges import CodeJudge, Judge, JudgeInput, JudgeJob, JudgeReply, LLMClient, run_judges
from tracejudge.judges import errors, runner
from tracejudge.judges.executor import CodeJudgeExecutor
from tracejudge.testing import FakeLLMServer

RATE = Judge(name="rate", description="Test judge.", prompt="Rate this output:\n{output}")
TOXICITY = Judge(name="toxicity", prompt="How toxic is:\n{output}", greater_is_better=False)
TOPICAL = Judge(name="topical", prompt="Is {output} about {topic}?")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(retry_after=0.05, hang_seconds=3) as srv:
        yield srv


def run(
    server: FakeLLMServer | None,
    jobs,
    *,
    with_client: bool = True,
    deadline_in: float | None = None,
    code_executor: CodeJudgeExecutor | None = None,
    **execution,
):
    """run_judges on a fresh client (closed afterwards); ``deadline_in`` is relative to the start."""
    execution.setdefault("timeout_seconds", 5.0)
    config = ExecutionConfig(**execution)

    async def go():
        client = None
        if with_client and server is not None:
            client = LLMClient(
                base_url=server.base_url,
                api_key="sk-test",
                timeout_seconds=config.timeout_seconds,
                max_attempts=config.attempts,
                backoff_initial=0.01,
                backoff_max=0.05,
            )
        deadline = None if deadline_in is None else time.monotonic() + deadline_in
        try:
            return await run_judges(
                jobs, client=client, execution=config, deadline=deadline, code_executor=code_executor
            )
        finally:
            if client is not None:
                await client.aclose()

    return asyncio.run(go())


def job(output, judge=RATE, *, target="workflow", threshold=0.8, model=None, **input_fields) -> JudgeJob:
    return JudgeJob(
        judge=judge,
        input=JudgeInput(target=target, span_id=f"span-{target}", output=output, **input_fields),
        threshold=threshold,
        model=model,
        key=f"key-{target}-{judge.name}",
    )


# ----------------------------------------------------------------------------- concurrency


def test_twenty_jobs_overlap(server):
    server.latency_ms = 200
    jobs = [job(f"answer {i} [[tj:score=0.9]]", target=f"n{i}") for i in range(20)]
    results = run(server, jobs, concurrency=32)

    assert len(results) == 20
    assert all(r.ok and r.score == 0.9 and r.passed for r in results), [r.error for r in results]
    stats = server.stats()
    assert stats["requests"] == 20
    assert stats["max_concurrent"] >= 15  # the server saw the calls overlap


def test_concurrency_bound_is_respected(server):
    server.latency_ms = 50
    jobs = [job(f"answer {i}", target=f"n{i}") for i in range(12)]
    results = run(server, jobs, concurrency=4)

    assert all(r.ok for r in results)
    stats = server.stats()
    assert stats["requests"] == 12
    assert 1 <= stats["max_concurrent"] <= 4


def test_results_in_job_order_and_fields(server):
    # later jobs answer first: results must still come back in job order
    jobs = [
        job(f"answer {i} [[tj:latency={(5 - i) * 40}]] [[tj:score=0.{i + 1}]]", target=f"n{i}", threshold=0.3)
        for i in range(5)
    ]
    results = run(server, jobs, concurrency=8)

    assert [r.target for r in results] == [f"n{i}" for i in range(5)]
    assert [r.score for r in results] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [r.passed for r in results] == [False, False, True, True, True]
    first = results[0]
    assert first.name == "rate" and first.span_id == "span-n0" and first.key == "key-n0-rate"
    assert first.threshold == 0.3 and first.greater_is_better is True
    assert first.model == "gpt-4o-mini" and first.attempts == 1
    assert first.tokens.prompt > 0 and first.tokens.completion > 0
    assert first.rationale.startswith("tracejudge-fake-llm")
    assert first.error is None and first.timestamp.endswith("Z")
    # n0's reply was held back 200 ms by the server: its duration covers at least that
    assert first.duration_ms >= 200.0


def test_model_is_normalized_and_sent(server):
    results = run(server, [job("x", model="openai:/gpt-4o")])
    assert results[0].ok and results[0].model == "gpt-4o"
    assert server.requests[-1].body["model"] == "gpt-4o"
    assert server.requests[-1].judge == "rate"


# ----------------------------------------------------------------------------- failure isolation


def test_one_failing_never_hides_the_others(server):
    jobs = [
        job("fine [[tj:score=0.9]]", target="a"),
        job("stuck [[tj:fault=hang]]", target="hang"),
        job("fine [[tj:score=0.8]]", target="b"),
        job("refused [[tj:fault=401]]", target="auth"),
        job("no topic here", TOPICAL, target="missing"),
        job("fine [[tj:score=0.7]]", target="c", threshold=0.6),
    ]
    # One attempt each: after a 401 the client fails fast for every *later* request on
    # purpose (provider-wide refusal), so a retried hang would report the 401 instead.
    results = run(server, jobs, concurrency=32, timeout_seconds=0.5, retry_on_failure=False)

    by_target = {r.target: r for r in results}
    assert [r.target for r in results] == ["a", "hang", "b", "auth", "missing", "c"]
    assert by_target["hang"].error.type == errors.TIMEOUT
    assert by_target["auth"].error.type == errors.AUTHENTICATION_ERROR
    assert by_target["missing"].error.type == errors.MISSING_VARIABLE
    assert "{topic}" in by_target["missing"].error.message
    assert by_target["missing"].attempts == 0
    for name in ("hang", "auth", "missing"):
        r = by_target[name]
        assert r.passed is False and r.score is None and not r.ok
    assert [(by_target[t].score, by_target[t].passed) for t in "abc"] == [(0.9, True), (0.8, True), (0.7, True)]
    # the missing-variable job never reached the server
    assert sorted(r.judge for r in server.requests) == ["rate"] * 5


def test_retried_job_next_to_a_bad_reply(server):
    jobs = [
        job("[[tj:fault=503x1]] [[tj:score=0.9]]", target="flaky"),
        job("[[tj:fault=malformed]]", target="garbled"),
        job("[[tj:fault=out_of_range]]", target="too_high"),
    ]
    results = run(server, jobs, concurrency=4, max_attempts=3)
    flaky, garbled, too_high = results
    assert flaky.ok and flaky.score == 0.9 and flaky.attempts == 2
    # an invalid reply is asked again; it fails only when every attempt was invalid
    assert garbled.error.type == errors.REPLY_NOT_JSON and garbled.attempts == 3
    assert too_high.error.type == errors.REPLY_OUT_OF_RANGE and too_high.attempts == 3
    assert garbled.tokens.prompt > 0  # the invalid replies were paid for: counted


def test_invalid_reply_then_valid_one_scores(server):
    results = run(server, [job("[[tj:fault=missing_fieldx2]] [[tj:score=0.7]]", threshold=0.5)], max_attempts=3)
    assert results[0].ok and results[0].score == 0.7 and results[0].attempts == 3


def test_llm_judge_without_client_and_blank_model_are_results_not_exceptions(server):
    results = run(None, [job("x", target="noclient")], with_client=False)
    assert results[0].error.type == errors.PROVIDER_ERROR

    results = run(server, [job("x", target="blank", model="   "), job("y [[tj:score=0.95]]", target="fine")])
    assert results[0].error.type == errors.BAD_REQUEST
    assert results[1].ok and results[1].score == 0.95


def test_truncation_is_recorded_on_the_result(server):
    results = run(server, [job("y" * 5000)], max_input_chars=1000)
    assert results[0].ok
    assert results[0].truncated == {"output": 5000}
    sent = server.prompts_for("rate")[0][1]["content"]
    assert "cut by tracejudge: 4000 of 5000 characters omitted" in sent


# ----------------------------------------------------------------------------- direction / rationale


def test_lower_is_better_passes_at_or_below_threshold(server):
    jobs = [
        job("[[tj:score=0.2]]", TOXICITY, target="clean", threshold=0.3),
        job("[[tj:score=0.3]]", TOXICITY, target="edge", threshold=0.3),
        job("[[tj:score=0.5]]", TOXICITY, target="toxic", threshold=0.3),
    ]
    clean, edge, toxic = run(server, jobs)
    assert (clean.passed, edge.passed, toxic.passed) == (True, True, False)
    assert clean.greater_is_better is False and clean.quality == pytest.approx(0.8)
    system = server.prompts_for("toxicity")[0][0]["content"]
    assert "1.0 is the worst" in system


def test_log_rationale_false_drops_rationale(server):
    results = run(server, [job("x"), job("y", CodeJudge(name="c", fn=lambda x: (0.9, "because")))], log_rationale=False)
    assert all(r.ok and r.rationale is None for r in results)


# ----------------------------------------------------------------------------- code judges


def _sync_float(x: JudgeInput) -> float:
    return 1.0 if "good" in x.output_text else 0.0


def _sync_tuple(x: JudgeInput):
    return 0.75, f"length {len(x.output_text)}"


async def _async_float(x: JudgeInput) -> float:
    await asyncio.sleep(0)
    return 0.6


async def _async_tuple(x: JudgeInput):
    await asyncio.sleep(0)
    return (0.95, "async rationale")


def _reply(x: JudgeInput) -> JudgeReply:
    return JudgeReply(score=0.5, rationale="a JudgeReply")


def _raises(x: JudgeInput) -> float:
    raise RuntimeError("judge bug")


def _raises_timeout(x: JudgeInput) -> float:
    raise TimeoutError("my own timeout, not the runner's")


def _out_of_range(x: JudgeInput) -> float:
    return 1.5


def _not_a_number(x: JudgeInput):
    return "high"


async def _too_slow(x: JudgeInput) -> float:
    await asyncio.sleep(10)
    return 1.0


def code(name, fn, **kwargs) -> CodeJudge:
    return CodeJudge(name=name, fn=fn, **kwargs)


def test_code_judges_sync_and_async(server):
    jobs = [
        job("a good answer", code("sync_float", _sync_float), target="t1"),
        job("abcd", code("sync_tuple", _sync_tuple), target="t2", threshold=0.7),
        job("x", code("async_float", _async_float), target="t3", threshold=0.7),
        job("x", code("async_tuple", _async_tuple), target="t4"),
        job("x", code("reply", _reply), target="t5", threshold=0.5),
        job("x", code("lambda", lambda x: 0.1, greater_is_better=False), target="t6", threshold=0.2),
    ]
    r1, r2, r3, r4, r5, r6 = run(server, jobs)

    assert (r1.score, r1.passed, r1.rationale) == (1.0, True, "")
    assert (r2.score, r2.passed, r2.rationale) == (0.75, True, "length 4")
    assert (r3.score, r3.passed) == (0.6, False)
    assert (r4.score, r4.passed, r4.rationale) == (0.95, True, "async rationale")
    assert (r5.score, r5.passed, r5.rationale) == (0.5, True, "a JudgeReply")
    assert (r6.score, r6.passed) == (0.1, True)
    for r in (r1, r2, r3, r4, r5, r6):
        assert r.ok and r.model == "code" and r.attempts == 1 and r.tokens.prompt == 0
    assert server.stats()["requests"] == 0  # code judges never call the model


def test_code_judge_failures(server):
    jobs = [
        job("x", code("raises", _raises), target="raises"),
        job("x", code("raises_timeout", _raises_timeout), target="raises_timeout"),
        job("x", code("out_of_range", _out_of_range), target="out_of_range"),
        job("x", code("not_a_number", _not_a_number), target="not_a_number"),
        job("x", code("too_slow", _too_slow), target="too_slow"),
        job("", code("needs_output", _sync_float), target="needs_output"),
        job("fine", code("ok", lambda x: 0.9), target="ok"),
    ]
    results = {r.target: r for r in run(None, jobs, with_client=False, timeout_seconds=0.2)}

    assert results["raises"].error.type == errors.JUDGE_EXCEPTION
    assert "RuntimeError: judge bug" in results["raises"].error.message
    # a TimeoutError raised by the judge itself is the judge's exception, not our timeout
    assert results["raises_timeout"].error.type == errors.JUDGE_EXCEPTION
    assert results["out_of_range"].error.type == errors.REPLY_OUT_OF_RANGE
    assert results["not_a_number"].error.type == errors.REPLY_INVALID
    assert results["too_slow"].error.type == errors.TIMEOUT
    assert results["needs_output"].error.type == errors.MISSING_VARIABLE
    assert results["ok"].ok and results["ok"].score == 0.9
    for name, r in results.items():
        if name != "ok":
            assert r.passed is False and r.score is None


# ----------------------------------------------------------------------------- code judge threads


def test_hung_code_judges_cannot_starve_the_rest():
    """12 blocking judges that never return time out; judges after them still run (issue 8, item 6)."""
    release = threading.Event()

    def hangs(x: JudgeInput) -> float:
        release.wait(120)
        return 1.0

    try:
        hung = [job("x", code(f"hung{i}", hangs), target=f"h{i}") for i in range(12)]
        trivial_in_batch = job("x", code("trivial", lambda x: 0.9), target="trivial")
        results = run(None, [*hung, trivial_in_batch], with_client=False, timeout_seconds=0.2, concurrency=32)
        assert [r.error.type for r in results[:12]] == [errors.TIMEOUT] * 12
        assert results[12].ok and results[12].score == 0.9

        # a later batch, while the 12 threads are still stuck: it must not wait for them
        later = [job("x", code(f"later{i}", lambda x: 0.8), target=f"l{i}") for i in range(3)]
        results = run(None, later, with_client=False, timeout_seconds=60.0)
        assert all(r.ok and r.score == 0.8 for r in results), [r.error for r in results]
    finally:
        release.set()


def test_code_judge_threads_are_bounded():
    executor = CodeJudgeExecutor(max_workers=3)
    lock = threading.Lock()
    active = [0, 0]  # now, most seen
    barrier = threading.Barrier(3, timeout=30)

    def counted(x: JudgeInput) -> float:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        try:
            barrier.wait()  # three at a time get through: proves three ran together
        finally:
            with lock:
                active[0] -= 1
        return 1.0

    jobs = [job("x", code(f"c{i}", counted), target=f"c{i}") for i in range(6)]
    results = run(None, jobs, with_client=False, timeout_seconds=60.0, code_executor=executor)
    assert all(r.ok for r in results), [r.error for r in results]
    assert active[1] == 3  # never more than max_workers at once
    assert executor.running == 0 and executor.hung == 0


def test_too_many_hung_threads_fail_fast_with_a_clear_error():
    executor = CodeJudgeExecutor(max_workers=2, max_hung=2)
    release = threading.Event()
    returned = threading.Semaphore(0)

    def hangs(x: JudgeInput) -> float:
        release.wait(120)
        returned.release()
        return 1.0

    try:
        first = run(None, [job("x", code(f"h{i}", hangs), target=f"h{i}") for i in range(2)],
                    with_client=False, timeout_seconds=0.2, code_executor=executor)
        assert [r.error.type for r in first] == [errors.TIMEOUT] * 2
        assert executor.hung == 2
        refused = run(None, [job("x", code("next", lambda x: 1.0))], with_client=False, code_executor=executor)
        assert refused[0].error.type == errors.TIMEOUT
        assert "2 code judge call(s) of this process timed out and are still running" in refused[0].error.message
    finally:
        release.set()
    assert returned.acquire(timeout=30) and returned.acquire(timeout=30)
    results = run(None, [job("x", code("after", lambda x: 1.0))], with_client=False, code_executor=executor)
    assert results[0].ok  # the hung threads returned: judges run again


# ----------------------------------------------------------------------------- rendering off the loop


def test_large_structured_input_is_rendered_off_the_event_loop(server, monkeypatch):
    threads: dict[str, str] = {}
    real_render = runner.render

    def recording_render(judge, judge_input, **kwargs):
        threads[judge_input.target] = threading.current_thread().name
        return real_render(judge, judge_input, **kwargs)

    monkeypatch.setattr(runner, "render", recording_render)
    big = {"rows": ["x" * 1000] * 5000}  # 5 MB once JSON-encoded
    results = run(server, [job(big, target="big"), job("small text", target="small")])
    assert all(r.ok for r in results), [r.error for r in results]
    assert threads["big"].startswith("tracejudge-render")
    assert threads["small"] == threading.main_thread().name  # cheap renders stay on the loop
    assert results[0].truncated == {"output": len(json.dumps(big))}


# ----------------------------------------------------------------------------- deadline


async def _hangs_async(x: JudgeInput) -> float:
    await asyncio.Event().wait()  # never set
    return 1.0


def run_then_expire(server, jobs, *, expire_when, **execution):
    """run_judges with a deadline that passes only when the test says so, not by the wall clock.

    The loop's clock is the monotonic clock plus an offset; once ``expire_when(done, server)``
    holds (``done``: the targets whose results are in), the offset jumps past the deadline.
    Per-call timeouts are far longer than the jump, so only the deadline can expire.
    """
    config = ExecutionConfig(timeout_seconds=50_000, **execution)
    done: set[str] = set()

    async def go():
        loop = asyncio.get_running_loop()
        offset = [0.0]
        real_time = loop.time
        loop.time = lambda: real_time() + offset[0]  # type: ignore[method-assign]
        client = LLMClient(base_url=server.base_url, api_key="sk-test", timeout_seconds=50_000, max_attempts=1)
        original = runner.run_one

        async def recording_run_one(job, **kwargs):
            result = await original(job, **kwargs)
            done.add(job.input.target)
            return result

        runner.run_one = recording_run_one
        try:
            batch = asyncio.ensure_future(
                run_judges(jobs, client=client, execution=config, deadline=loop.time() + 1000)
            )
            while not expire_when(done, server):
                assert not batch.done(), "the batch ended before the deadline was moved"
                await asyncio.sleep(0.01)
            offset[0] = 2000.0  # past the deadline, short of every per-call timeout
            return await batch
        finally:
            runner.run_one = original
            loop.time = real_time  # type: ignore[method-assign]
            await client.aclose()

    return asyncio.run(go())


def test_overall_deadline_gives_up_unfinished_jobs(server):
    server.hang_seconds = 600  # held until the server stops, whatever the load
    jobs = [
        job("fast [[tj:score=0.9]]", target="fast1"),
        job("stuck [[tj:fault=hang]]", target="stuck"),
        job("slow code", code("slow_code", _hangs_async), target="slow_code"),
        job("fast [[tj:score=0.8]]", target="fast2"),
    ]
    results = run_then_expire(
        server, jobs, concurrency=8, expire_when=lambda done, srv: {"fast1", "fast2"} <= done
        and srv.stats()["requests"] == 3
    )
    results = {r.target: r for r in results}

    assert results["fast1"].ok and results["fast2"].ok
    for name in ("stuck", "slow_code"):
        assert results[name].error.type == errors.DEADLINE_EXCEEDED
        assert "while this judge ran" in results[name].error.message


def test_deadline_reached_while_waiting_for_a_slot(server):
    server.hang_seconds = 600
    jobs = [job("stuck [[tj:fault=hang]]", target="stuck")] + [job("fast", target=f"f{i}") for i in range(3)]
    results = run_then_expire(server, jobs, concurrency=1, expire_when=lambda done, srv: srv.stats()["requests"] == 1)

    assert [r.error.type for r in results] == [errors.DEADLINE_EXCEEDED] * 4
    assert "while this judge ran" in results[0].error.message
    assert all("before this judge ran" in r.error.message for r in results[1:])
    assert server.stats()["requests"] == 1  # the waiting jobs never called the model


def test_deadline_already_passed_sends_nothing(server):
    results = run(server, [job("a"), job("b", code("c", _sync_float))], deadline_in=-1.0)
    assert [r.error.type for r in results] == [errors.DEADLINE_EXCEEDED] * 2
    assert server.stats()["requests"] == 0


def test_empty_job_list(server):
    assert run(server, []) == []
