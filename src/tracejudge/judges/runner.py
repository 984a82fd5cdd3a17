"""Run many (target, judge) pairs at once; one failing never hides the others.

:func:`run_judges` takes a list of :class:`JudgeJob` and returns one
:class:`JudgeResult` per job, in order, always: a judge that failed, timed
out or could not render its prompt comes back as a result with ``error``
set and ``passed=False``. Concurrency is bounded by a semaphore; each call
has its own per-attempt timeout (in the client) and the batch an optional
overall deadline.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tracejudge.config import ExecutionConfig, normalize_model
from tracejudge.judges import errors
from tracejudge.judges.client import LLMClient, LLMReply, SharedLimiter
from tracejudge.judges.controls import CallControls, GuardedReply
from tracejudge.judges.errors import JudgeError, JudgeInputError
from tracejudge.judges.executor import CodeJudgeExecutor, CodeJudgeTimeout, default_code_executor
from tracejudge.judges.model import (
    AnyJudge,
    CodeJudge,
    Judge,
    JudgeInput,
    JudgeReply,
    JudgeResult,
    TokenUsage,
    passes,
    to_text,
    utc_now,
)
from tracejudge.judges.prompt import RenderedPrompt, is_large, render, resolve_variable

DEFAULT_CONCURRENCY = 32


@dataclass(frozen=True)
class JudgeJob:
    """One judge to run on one target, with the threshold and model the plan chose."""

    judge: AnyJudge
    input: JudgeInput
    threshold: float
    model: str | None = None
    key: str | None = None


async def run_judges(
    jobs: Sequence[JudgeJob],
    *,
    client: LLMClient | None,
    execution: ExecutionConfig | None = None,
    default_model: str = "gpt-4o-mini",
    deadline: float | None = None,
    limiter: SharedLimiter | None = None,
    controls: CallControls | None = None,
    code_executor: CodeJudgeExecutor | None = None,
) -> list[JudgeResult]:
    """Run every job concurrently (bounded by ``execution.concurrency``); one result per job.

    ``deadline`` is a ``time.monotonic()`` instant after which unfinished jobs
    are given up as ``DEADLINE_EXCEEDED``. Blocking code judges run on
    ``code_executor`` (default: the process-wide :class:`CodeJudgeExecutor`).

    >>> results = await run_judges(jobs, client=client)  # doctest: +SKIP
    """
    execution = execution or ExecutionConfig()
    semaphore = asyncio.Semaphore(max(1, execution.concurrency))

    async def one(job: JudgeJob) -> JudgeResult:
        async with semaphore:
            return await run_one(
                job,
                client=client,
                execution=execution,
                default_model=default_model,
                deadline=deadline,
                limiter=limiter,
                controls=controls,
                code_executor=code_executor,
            )

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def run_one(
    job: JudgeJob,
    *,
    client: LLMClient | None,
    execution: ExecutionConfig,
    default_model: str = "gpt-4o-mini",
    deadline: float | None = None,
    limiter: SharedLimiter | None = None,
    controls: CallControls | None = None,
    code_executor: CodeJudgeExecutor | None = None,
) -> JudgeResult:
    """Run one job; never raises (except cancellation)."""
    judge = job.judge
    model_error: JudgeError | None = None
    try:
        model = _model_for(judge, job.model, default_model)
    except ValueError as exc:  # e.g. a blank model name: this judge fails, not the batch
        model = job.model or judge.model or default_model
        model_error = JudgeError(errors.BAD_REQUEST, f"judge {judge.name!r}: {exc}")
    common: dict[str, Any] = dict(
        name=judge.name,
        target=job.input.target,
        span_id=job.input.span_id,
        threshold=job.threshold,
        greater_is_better=judge.greater_is_better,
        model=model,
        judge_version=judge.version,
        key=job.key,
    )
    started = time.perf_counter()
    timestamp = utc_now()
    truncated: dict[str, int] = {}
    extra: dict[str, Any] = {}  # cost and cache (controls); scoring mode, samples and spread of LLM judges
    try:
        # The loop's clock (``time.monotonic()`` unless a test drives the loop's clock).
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if remaining is not None and remaining <= 0:
            raise JudgeError(errors.DEADLINE_EXCEEDED, "the evaluation's overall deadline passed before this judge ran")
        if model_error is not None:
            raise model_error
        overall = asyncio.timeout(remaining)
        try:
            async with overall:
                if isinstance(judge, CodeJudge):
                    reply = await _run_code_judge(
                        judge, job.input, execution.timeout_seconds, code_executor or default_code_executor()
                    )
                    attempts, tokens = 1, None
                else:
                    if client is None:
                        raise JudgeError(errors.PROVIDER_ERROR, "no LLM client configured for LLM judges")
                    mode = judge.scoring or execution.scoring
                    samples = judge.samples or execution.samples
                    prompt = await _render(judge, job.input, execution.max_input_chars, levels=mode == "logprobs")
                    truncated = prompt.truncated
                    llm_client = client
                    values = judged_values(judge, job.input, execution.max_input_chars) if controls is not None else {}

                    async def one_call(sample: int) -> GuardedReply:
                        def invoke() -> Any:
                            return llm_client.score(
                                model=model,
                                messages=prompt.messages,
                                judge=judge.name,
                                parameters=judge.parameters,
                                timeout_seconds=execution.timeout_seconds,
                                max_attempts=execution.attempts,
                                limiter=limiter,
                                levels=prompt.levels,
                            )

                        if controls is None:
                            return GuardedReply(reply=await invoke(), cost_usd=None)
                        # the one point where cache, budget and cost wrap an LLM call; each sample
                        # and scoring mode has its own cache entry (they are different calls)
                        keyed = dict(values)
                        if mode != "direct":
                            keyed["__scoring"] = mode
                        if samples > 1:
                            keyed["__sample"] = str(sample)
                        return await controls.call(
                            judge=judge.name,
                            version=judge.version,
                            model=model,
                            messages=prompt.messages,
                            parameters=judge.parameters,
                            values=keyed,
                            invoke=invoke,
                        )

                    guarded = await _sample(one_call, samples)
                    replies = [g.reply for g in guarded]
                    reply, attempts, tokens = _combine(replies)
                    extra.update(
                        scoring=replies[0].scoring,
                        scoring_fallback=replies[0].scoring_fallback,
                        samples=len(replies),
                        score_stdev=(
                            round(statistics.pstdev([r.reply.score for r in replies]), 6) if len(replies) > 1 else None
                        ),
                    )
                    if controls is not None:
                        costs = [g.cost_usd for g in guarded]
                        extra.update(
                            cost_usd=None if any(c is None for c in costs) else round(sum(costs), 8),  # type: ignore[arg-type]
                            cached=all(g.cached for g in guarded),
                            cache_key=guarded[0].cache_key,
                        )
        except TimeoutError:
            if not overall.expired():  # a TimeoutError of someone else's, not our deadline
                raise
            raise JudgeError(errors.DEADLINE_EXCEEDED, "the evaluation's overall deadline passed while this judge ran") from None
    except JudgeError as exc:
        spent = exc.tokens if controls is not None and isinstance(exc.tokens, TokenUsage) else None
        return JudgeResult.failed(
            exc,
            duration_ms=_ms(started),
            timestamp=timestamp,
            truncated=truncated,
            **({"cost_usd": controls.prices.cost(model, spent.prompt, spent.completion)} if controls and spent else {}),
            **common,
        )
    except Exception as exc:  # a bug somewhere must not take the other judges' results down
        error = JudgeError(errors.JUDGE_EXCEPTION, f"judge {judge.name!r} failed unexpectedly: {type(exc).__name__}: {exc}")
        return JudgeResult.failed(
            error,
            duration_ms=_ms(started),
            timestamp=timestamp,
            truncated=truncated,
            **common,
        )
    return JudgeResult(
        score=reply.score,
        passed=passes(reply.score, job.threshold, greater_is_better=judge.greater_is_better),
        rationale=reply.rationale if execution.log_rationale else None,
        duration_ms=_ms(started),
        timestamp=timestamp,
        attempts=attempts,
        truncated=truncated,
        **({"tokens": tokens} if tokens is not None else {}),
        **extra,
        **common,
    )


def judged_values(judge: Any, judge_input: JudgeInput, max_chars: int) -> dict[str, str]:
    """The text each template variable stands for (as judged), for the result cache's key."""
    return {v: to_text(resolve_variable(judge.name, v, judge_input))[:max_chars] for v in judge.variables}


async def _run_code_judge(
    judge: CodeJudge, judge_input: JudgeInput, timeout: float, executor: CodeJudgeExecutor
) -> JudgeReply:
    for variable in judge.variables:  # same missing-variable rule as LLM judges
        resolve_variable(judge.name, variable, judge_input)
    limit = asyncio.timeout(timeout)
    try:
        if inspect.iscoroutinefunction(judge.fn):
            async with limit:
                value = await judge.fn(judge_input)
        else:
            # Blocking functions (and MLflow scorers) run on their own bounded threads,
            # never the loop's default executor; the timeout starts once a thread is free.
            value = await executor.run(judge.fn, judge_input, timeout=timeout)
            if inspect.isawaitable(value):
                async with limit:
                    value = await value
    except CodeJudgeTimeout:
        raise JudgeError(errors.TIMEOUT, f"code judge {judge.name!r} did not return within {timeout:g} s") from None
    except TimeoutError as exc:
        if limit.expired():
            raise JudgeError(errors.TIMEOUT, f"code judge {judge.name!r} did not return within {timeout:g} s") from None
        raise JudgeError(errors.JUDGE_EXCEPTION, f"code judge {judge.name!r} raised {type(exc).__name__}: {exc}") from None
    except (JudgeError, JudgeInputError):
        raise
    except Exception as exc:
        raise JudgeError(errors.JUDGE_EXCEPTION, f"code judge {judge.name!r} raised {type(exc).__name__}: {exc}") from None
    return _coerce_code_reply(judge.name, value)


def _coerce_code_reply(name: str, value: Any) -> JudgeReply:
    if isinstance(value, JudgeReply):
        return value
    rationale = ""
    if isinstance(value, tuple) and len(value) == 2:
        value, rationale = value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JudgeError(errors.REPLY_INVALID, f"code judge {name!r} returned {value!r}; expected a number 0..1")
    if not 0.0 <= float(value) <= 1.0:
        raise JudgeError(errors.REPLY_OUT_OF_RANGE, f"code judge {name!r} returned score {value!r}, outside 0..1")
    return JudgeReply(score=float(value), rationale=str(rationale))


async def _sample(call: Any, samples: int) -> list[GuardedReply]:
    """``samples`` replies to the same prompt, asked at once; any failure fails the judge.

    Every sample is a full call (retries, rate limit, budget, tokens counted), so the cost
    multiplies by ``samples``. Set a ``temperature`` above 0 for the replies to differ.
    """
    if samples <= 1:
        return [await call(0)]
    return list(await asyncio.gather(*(call(i) for i in range(samples))))


def _combine(replies: list[LLMReply]) -> tuple[JudgeReply, int, TokenUsage]:
    """The mean score of the samples, the rationale of the one closest to it, every attempt and token."""
    mean = statistics.fmean(r.reply.score for r in replies)
    closest = min(replies, key=lambda r: abs(r.reply.score - mean))
    tokens = TokenUsage(
        prompt=sum(r.tokens.prompt for r in replies), completion=sum(r.tokens.completion for r in replies)
    )
    score = round(mean, 6) if len(replies) > 1 else replies[0].reply.score
    return JudgeReply(score=score, rationale=closest.reply.rationale), sum(r.attempts for r in replies), tokens


_render_pool: ThreadPoolExecutor | None = None
RENDER_THREADS = 2


async def _render(judge: Judge, judge_input: JudgeInput, max_input_chars: int, *, levels: bool = False) -> RenderedPrompt:
    """Render on the loop when it is cheap; a large structured input is rendered on a thread of
    its own, so JSON-encoding megabytes never stalls the other judge calls sharing the loop."""
    global _render_pool
    if not is_large(judge_input, max_input_chars):
        return render(judge, judge_input, max_input_chars=max_input_chars, levels=levels)
    if _render_pool is None:
        _render_pool = ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="tracejudge-render")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _render_pool, functools.partial(render, judge, judge_input, max_input_chars=max_input_chars, levels=levels)
    )


def _model_for(judge: AnyJudge, job_model: str | None, default_model: str) -> str:
    if judge.kind == "llm":
        return normalize_model(job_model or judge.model or default_model)
    return judge.model or "code"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
