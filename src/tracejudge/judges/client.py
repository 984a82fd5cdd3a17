"""The LLM side of a judge call: one ``openai`` async client, JSON replies, timeouts, retries.

One :class:`LLMClient` (and so one HTTP connection pool) serves every judge
call of a process. Each call asks for a JSON ``{rationale, score}`` reply (reasoning first)
through ``response_format`` with a JSON schema; an endpoint that refuses the
schema's bounds, logprobs or ``response_format`` itself with a 400 is asked
again without them, and remembered (ranges are always checked here).

Retries (tenacity): 429, 5xx, timeouts and dropped connections, with
exponential backoff and jitter, honouring ``Retry-After``; an invalid reply
(not JSON, a missing field, a score out of range) is asked again at once.
All within ``max_attempts``: the call fails only when every attempt failed,
with the last attempt's error. 400/401/403/404
fail at once with the provider's message. After a 401/403 or an exhausted
quota the client fails fast for ``PROVIDER_FAILURE_TTL`` seconds instead of
spending calls on a provider that refuses us.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from tracejudge.judges import errors
from tracejudge.judges.errors import JudgeError, JudgeReplyError
from tracejudge.judges.meter import current_meter
from tracejudge.judges.model import JudgeReply, RubricLevel, TokenUsage
from tracejudge.ops import metrics

try:  # openai >= 3 ships on httpx2; older releases on httpx
    import httpx2 as _httpx  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 3
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 20.0
RETRY_AFTER_MAX_SECONDS = 60.0
PROVIDER_FAILURE_TTL = 30.0
DEFAULT_MAX_CONNECTIONS = 256
JUDGE_HEADER = "X-Tracejudge-Judge"

#: The reply schema: ``rationale`` first, so a model that writes keys in schema order reasons before it scores.
REPLY_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "judge_reply",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "rationale": {"type": "string"},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["rationale", "score"],
            "additionalProperties": False,
        },
    },
}
TOP_LOGPROBS = 10


def level_schema(count: int) -> dict[str, Any]:
    """The reply schema of the ``logprobs`` mode: reasoning, then a level number 1..count."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "judge_level_reply",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "rationale": {"type": "string"},
                    "level": {"type": "integer", "enum": list(range(1, count + 1))},
                },
                "required": ["rationale", "level"],
                "additionalProperties": False,
            },
        },
    }


def without_bounds(response_format: dict[str, Any]) -> dict[str, Any]:
    """The same schema without ``minimum``/``maximum`` (some strict providers refuse them); we check ranges."""
    copy = json.loads(json.dumps(response_format))
    for prop in copy["json_schema"]["schema"]["properties"].values():
        prop.pop("minimum", None)
        prop.pop("maximum", None)
    return copy


def _has_bounds(response_format: Any) -> bool:
    try:
        properties = response_format["json_schema"]["schema"]["properties"].values()
    except (KeyError, TypeError, AttributeError):
        return False
    return any(isinstance(p, dict) and ("minimum" in p or "maximum" in p) for p in properties)


_BOUNDS_WORDS = re.compile(r"\b(minimum|maximum)\b", re.IGNORECASE)
_LOGPROBS_WORDS = re.compile(r"logprobs", re.IGNORECASE)
_LEVEL_VALUE = re.compile(r'"level"\s*:\s*"?(\d+)')
_RESPONSE_FORMAT_WORDS = re.compile(r"response_format|json_schema", re.IGNORECASE)
_CODE_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)

RateLimiter = Callable[[str], Awaitable[None]]


class SharedLimiter(Protocol):
    """A rate limit shared by every caller of an endpoint (e.g. all workers, through Redis).

    ``acquire`` waits for a slot; ``cool_down`` is told of a 429 so that every
    caller, not just this one, waits out the provider's ``Retry-After``.
    """

    async def acquire(self, model: str) -> None: ...

    async def cool_down(self, model: str, seconds: float) -> None: ...


@dataclass
class LLMReply:
    reply: JudgeReply
    tokens: TokenUsage
    attempts: int
    model: str
    #: "direct" (the reply's own score or level) or "logprobs" (probability-weighted levels).
    scoring: str = "direct"
    #: Why ``logprobs`` was asked for but not used; None when it was used or not asked for.
    scoring_fallback: str | None = None


@dataclass
class Completion:
    """One chat completion as the client needs it: the text, the tokens paid, the token logprobs."""

    content: str
    usage: TokenUsage
    logprobs: list[Any] | None = None


class LLMClient:
    """An OpenAI-compatible endpoint for judges; share one per process.

    >>> client = LLMClient(base_url="http://127.0.0.1:8089/v1", api_key="sk-test")  # doctest: +SKIP
    >>> await client.score(model="gpt-4o-mini", messages=[...], judge="relevance")  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        rate_limiter: RateLimiter | None = None,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
    ) -> None:
        self.base_url = base_url
        self.host = urlsplit(base_url).netloc if base_url else "api.openai.com"
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.rate_limiter = rate_limiter
        self._backoff = _exponential_jitter(backoff_initial, backoff_max)
        self._no_response_format: set[str] = set()
        self._unbounded_schema: set[str] = set()  # models whose provider refuses minimum/maximum
        self._no_logprobs: set[str] = set()  # models whose provider refuses logprobs
        self._provider_failure: tuple[JudgeError, float] | None = None
        self._openai = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,  # retries are ours (tenacity), so they are counted and bounded
            timeout=timeout_seconds,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=_httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
            ),
        )

    def __repr__(self) -> str:  # never show the key
        return f"LLMClient(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._openai.close()

    async def score(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        judge: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
        max_attempts: int | None = None,
        limiter: SharedLimiter | None = None,
        levels: tuple[RubricLevel, ...] = (),
    ) -> LLMReply:
        """Ask the model for a ``{rationale, score}`` reply; raise :class:`JudgeError` on failure.

        ``limiter`` (optional) is waited on before every attempt and told of every 429.
        ``levels`` (the ``logprobs`` mode, G-Eval): the reply names a level number
        instead, logprobs are requested, and the score is the probability-weighted
        mean of the levels' scores; without logprobs from the endpoint, the named
        level's score, with the reason recorded in ``scoring_fallback``.
        """
        attempts = 0
        fallback: str | None = None
        scoring = "direct"
        timeout = timeout_seconds or self.timeout_seconds
        tokens = TokenUsage()
        request_parameters = self._request_parameters(parameters or {}, judge)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts or self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    # Checked before every attempt (another call may have been refused
                    # meanwhile); ``attempts`` counts only requests actually sent.
                    self._fail_fast_if_refused()
                    if self.rate_limiter is not None or limiter is not None:
                        waited = time.monotonic()
                        if self.rate_limiter is not None:
                            await self.rate_limiter(model)
                        if limiter is not None:
                            await limiter.acquire(model)
                        metrics.observe_rate_limit_wait(model=model, seconds=time.monotonic() - waited)
                        self._fail_fast_if_refused()  # refused while we waited for a slot
                    attempts += 1
                    try:
                        completion = await self._complete(
                            model, messages, judge, request_parameters, timeout, levels=len(levels)
                        )
                    except openai.RateLimitError as exc:
                        if limiter is not None and _error_code(exc) != "insufficient_quota":
                            wait = _retry_after_seconds(exc)
                            await limiter.cool_down(model, min(wait if wait is not None else 1.0, RETRY_AFTER_MAX_SECONDS))
                        raise
                    tokens.prompt += completion.usage.prompt
                    tokens.completion += completion.usage.completion
                    # An unusable reply (not JSON, a field missing, out of range) is
                    # retried like a transient failure; the last one's error is kept.
                    if levels:
                        reply, scoring, fallback = self._level_reply(model, completion, levels)
                    else:
                        reply = parse_reply(completion.content)
        except JudgeError as exc:
            exc.attempts = attempts
            exc.tokens = tokens  # replies were paid for even when unusable, also before a later failure
            raise
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            error = self._translate(exc, timeout)
            error.attempts = attempts
            error.tokens = tokens  # e.g. invalid replies before a timeout: paid for
            if error.code in errors.PROVIDER_WIDE:
                self._provider_failure = (error, time.monotonic())
            raise error from exc
        return LLMReply(
            reply=reply, tokens=tokens, attempts=attempts, model=model, scoring=scoring, scoring_fallback=fallback
        )

    def _level_reply(
        self, model: str, completion: Completion, levels: tuple[RubricLevel, ...]
    ) -> tuple[JudgeReply, str, str | None]:
        level, rationale = parse_level_reply(completion.content, len(levels))
        if model in self._no_logprobs:
            return JudgeReply(score=levels[level - 1].score, rationale=rationale), "direct", (
                f"{self.host} refuses logprobs for {model}"
            )
        weighted = weighted_level_score(completion.content, completion.logprobs, levels)
        if weighted is None:
            reason = (
                "the endpoint returned no logprobs"
                if not completion.logprobs
                else "the logprobs did not cover the level token"
            )
            return JudgeReply(score=levels[level - 1].score, rationale=rationale), "direct", reason
        return JudgeReply(score=weighted, rationale=rationale), "logprobs", None

    async def _complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        judge: str | None,
        parameters: dict[str, Any],
        timeout: float,
        *,
        levels: int = 0,
    ) -> Completion:
        """Make one chat completion call: the one place a request is sent and its tokens known.

        Falls back, once per model and remembered: a 400 about ``minimum``/``maximum``
        -> the schema without them (ranges are still checked by :func:`parse_reply`);
        a 400 about ``logprobs`` -> no logprobs; a 400 about ``response_format`` ->
        plain JSON instructions.
        """
        options: dict[str, Any] = {"timeout": timeout}
        meter = current_meter()
        if judge:
            options["headers"] = {JUDGE_HEADER: judge}
        for fallbacks_left in range(3, -1, -1):  # each fallback applies once: the loop ends
            kwargs = self._call_parameters(model, parameters, levels)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    # The SDK's own request path (auth, headers, status errors as openai.APIStatusError
                    # subclasses) without ``chat.completions.create``'s per-call work that a plain JSON body
                    # does not need: walking the params' TypedDicts and building a pydantic ChatCompletion
                    # (measured: a third of the client's CPU per call, bench/client_cpu.py). The reply is read as plain JSON.
                    if meter is not None:
                        meter.sent += 1
                    response = await self._openai.post(
                        "/chat/completions",
                        cast_to=_httpx.Response,
                        body={"model": model, "messages": messages, **kwargs},
                        options=options,  # type: ignore[arg-type]
                    )
                break
            except openai.BadRequestError as exc:
                if not fallbacks_left or not self._learn_from_400(model, str(exc), kwargs):
                    raise
            except (asyncio.CancelledError, TimeoutError, openai.APITimeoutError):
                if meter is not None:
                    meter.unanswered += 1  # sent, no reply: the provider bills it anyway
                raise
            finally:
                metrics.observe_llm_call(model=model, seconds=time.monotonic() - sent)
        completion = completion_from_json(response)
        if meter is not None:
            meter.add(completion.usage.prompt, completion.usage.completion)
        return completion

    def _call_parameters(self, model: str, parameters: dict[str, Any], levels: int) -> dict[str, Any]:
        kwargs = {k: v for k, v in parameters.items() if k != "response_format"}
        if model not in self._no_response_format:
            schema = level_schema(levels) if levels else REPLY_SCHEMA
            if model in self._unbounded_schema:
                schema = without_bounds(schema)
            # A judge's own response_format (e.g. json_object) wins over the JSON schema.
            kwargs["response_format"] = parameters.get("response_format", schema)
        if levels and model not in self._no_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        return kwargs

    def _learn_from_400(self, model: str, message: str, sent: dict[str, Any]) -> bool:
        """Whether a 400 names something we can drop and ask again without (remembered per model)."""
        if _has_bounds(sent.get("response_format")) and _BOUNDS_WORDS.search(message):
            if model not in self._unbounded_schema:
                log.info("endpoint %s refuses minimum/maximum in the reply schema of %s; ranges checked here", self.host, model)
            self._unbounded_schema.add(model)
            return True
        if sent.get("logprobs") and _LOGPROBS_WORDS.search(message):
            log.info("endpoint %s refuses logprobs for %s; scoring from the named level instead", self.host, model)
            self._no_logprobs.add(model)
            return True
        if "response_format" in sent and _RESPONSE_FORMAT_WORDS.search(message):
            log.info("endpoint %s rejects response_format for model %s; using plain JSON instructions", self.host, model)
            self._no_response_format.add(model)
            return True
        return False

    def _request_parameters(self, parameters: dict[str, Any], judge: str | None) -> dict[str, Any]:
        """A judge's ``parameters`` as fields of the request's JSON body.

        Whatever the SDK knows (temperature, seed, max_tokens, ...) or not (``top_k`` of vLLM
        or Ollama, ...) is sent as given. Parameters that would change what the call is
        (model, messages, streaming) are refused.
        """
        reserved = sorted(RESERVED_PARAMETERS.intersection(parameters))
        if reserved:
            raise JudgeError(
                errors.BAD_REQUEST,
                f"judge {judge!r}: parameter(s) {reserved} cannot be set in a judge's parameters "
                "(tracejudge sets them itself)",
            )
        return dict(parameters)

    def clear_provider_failure(self) -> None:
        """Forget an earlier 401/403/quota refusal (after fixing the key, or in tests)."""
        self._provider_failure = None

    def _fail_fast_if_refused(self) -> None:
        if self._provider_failure is None:
            return
        error, since = self._provider_failure
        age = time.monotonic() - since
        if age > PROVIDER_FAILURE_TTL:
            self._provider_failure = None
            return
        raise JudgeError(
            error.code, f"{error.message} (failing fast: {self.host} refused a call {age:.0f} s ago; not calling again yet)"
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, JudgeReplyError):
            return 0.0  # the endpoint answered; nothing to wait out before asking again
        retry_after = _retry_after_seconds(exc)
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_MAX_SECONDS)
        return self._backoff(state)

    def _translate(self, exc: BaseException, timeout: float | None = None) -> JudgeError:
        error = self._translate_unredacted(exc, self.timeout_seconds if timeout is None else timeout)
        error.message = self._redact(error.message)
        error.args = (f"{error.code}: {error.message}",)
        return error

    def _redact(self, text: str) -> str:
        """Remove the API key from text bound for results, logs and MLflow (some proxies echo it)."""
        key = self._openai.api_key if isinstance(self._openai.api_key, str) else ""
        if len(key) >= 6 and key in text:
            text = text.replace(key, "<redacted>")
        return text

    def _translate_unredacted(self, exc: BaseException, timeout: float) -> JudgeError:
        where = self.host
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError, openai.APITimeoutError)):
            return JudgeError(errors.TIMEOUT, f"no reply from {where} within {timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return JudgeError(errors.CONNECTION_ERROR, f"connection to {where} failed: {_cause(exc)}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = _provider_message(exc)
            if status == 429:
                code = errors.QUOTA_EXCEEDED if _error_code(exc) == "insufficient_quota" else errors.RATE_LIMITED
                return JudgeError(code, f"429 from {where}: {message}")
            if status == 401:
                return JudgeError(errors.AUTHENTICATION_ERROR, f"401 from {where}: {message}")
            if status == 403:
                return JudgeError(errors.PERMISSION_DENIED, f"403 from {where}: {message}")
            if status == 404:
                return JudgeError(errors.MODEL_NOT_FOUND, f"404 from {where}: {message}")
            if status in (400, 422):
                return JudgeError(errors.BAD_REQUEST, f"{status} from {where}: {message}")
            return JudgeError(errors.PROVIDER_ERROR, f"{status} from {where}: {message}")
        return JudgeError(errors.PROVIDER_ERROR, f"{type(exc).__name__} calling {where}: {exc}")


def parse_reply(content: str | None) -> JudgeReply:
    """Validate a judge model's reply: a JSON object with a 0..1 ``score`` and a ``rationale``.

    Tolerant of form, strict on meaning: any key order, a fenced or prose-wrapped
    object, a score given as a numeric string are accepted; a missing, non-numeric
    or out-of-range score is an error (the range is always checked here, whatever
    the provider's schema support).

    >>> parse_reply('{"rationale": "ok", "score": 0.8}').score
    0.8
    >>> parse_reply('Here you go: {"score": "0.25", "rationale": "thin"}').score
    0.25
    """
    data = _reply_object(content)
    if "score" not in data:
        raise JudgeReplyError(
            errors.REPLY_MISSING_FIELD, f"the judge reply has no 'score' field (fields: {sorted(data)}): {_preview(str(data))}"
        )
    score = _number(data["score"])
    if score is None:
        raise JudgeReplyError(errors.REPLY_INVALID, f"the judge reply's score is not a number: {data['score']!r}")
    if not 0.0 <= score <= 1.0:
        raise JudgeReplyError(errors.REPLY_OUT_OF_RANGE, f"the judge reply's score {data['score']!r} is outside 0..1")
    return JudgeReply(score=score, rationale=_rationale(data))


def parse_level_reply(content: str | None, count: int) -> tuple[int, str]:
    """The level number (1..count) and rationale of a ``logprobs``-mode reply.

    >>> parse_level_reply('{"rationale": "fits level 4", "level": 4}', 5)
    (4, 'fits level 4')
    """
    data = _reply_object(content)
    if "level" not in data:
        raise JudgeReplyError(
            errors.REPLY_MISSING_FIELD, f"the judge reply has no 'level' field (fields: {sorted(data)}): {_preview(str(data))}"
        )
    level = _number(data["level"])
    if level is None or level != int(level):
        raise JudgeReplyError(errors.REPLY_INVALID, f"the judge reply's level is not a whole number: {data['level']!r}")
    if not 1 <= int(level) <= count:
        raise JudgeReplyError(errors.REPLY_OUT_OF_RANGE, f"the judge reply's level {data['level']!r} is outside 1..{count}")
    return int(level), _rationale(data)


def weighted_level_score(content: str, logprobs: list[Any] | None, levels: tuple[RubricLevel, ...]) -> float | None:
    """G-Eval: the levels' scores weighted by the probability of each level digit, where the reply wrote it.

    ``levels[i - 1]`` is level ``i``. None when the logprobs do not cover the level's token.
    """
    if not logprobs:
        return None
    match = _LEVEL_VALUE.search(content)
    if match is None:
        return None
    position, offset = match.start(1), 0
    for token in logprobs:
        text = _field(token, "token", "") or ""
        if offset <= position < offset + len(text) or (not text and offset == position):
            candidates = list(_field(token, "top_logprobs") or []) or [token]
            weights: dict[int, float] = {}
            for candidate in candidates:
                digit = (_field(candidate, "token", "") or "").strip().strip('"')
                if digit.isdigit() and 1 <= int(digit) <= len(levels):
                    probability = math.exp(float(_field(candidate, "logprob", -math.inf)))
                    weights[int(digit)] = weights.get(int(digit), 0.0) + probability
            total = sum(weights.values())
            if total <= 0:
                return None
            score = sum(p * levels[d - 1].score for d, p in weights.items()) / total
            return round(min(1.0, max(0.0, score)), 6)
        offset += len(text)
    return None


def completion_from_json(response: Any) -> Completion:
    """The text, tokens and token logprobs of a chat completion's JSON body (an ``httpx`` response).

    A 200 whose body is not a chat completion (a proxy's HTML page, say) raises
    ``openai.APIResponseValidationError``, as the SDK's own parsing would.
    """
    try:
        data = json.loads(response.content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise openai.APIResponseValidationError(
            response=response, body=response.text, message=f"the reply is not a chat completion: {_preview(response.text)}"
        )
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = TokenUsage(prompt=usage.get("prompt_tokens") or 0, completion=usage.get("completion_tokens") or 0)
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    logprobs = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    return Completion(
        content=content if isinstance(content, str) else "", usage=tokens, logprobs=list(logprobs) if logprobs else None
    )


def _field(item: Any, name: str, default: Any = None) -> Any:
    """A field of a logprobs entry: a dict from the JSON body, or an object (the SDK's types)."""
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def _reply_object(content: str | None) -> dict[str, Any]:
    text = (content or "").strip()
    if not text:
        raise JudgeReplyError(errors.REPLY_EMPTY, "the judge model replied with empty content")
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        data = _embedded_object(text)
        if data is None:
            raise JudgeReplyError(
                errors.REPLY_NOT_JSON, f"the judge reply is not valid JSON ({exc.msg} at char {exc.pos}): {_preview(text)}"
            ) from None
    if not isinstance(data, dict):
        raise JudgeReplyError(errors.REPLY_INVALID, f"the judge reply is JSON but not an object: {_preview(text)}")
    return data


def _embedded_object(text: str) -> dict[str, Any] | None:
    """The last JSON object inside prose (``Sure! {...}``, a fence after an explanation), if any."""
    decoder = json.JSONDecoder()
    found = None
    for start in [i for i, ch in enumerate(text) if ch == "{"][:50]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found = value
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)  # NaN/inf fail the range check, as out of range
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _rationale(data: dict[str, Any]) -> str:
    rationale = data.get("rationale", "")
    return rationale if isinstance(rationale, str) else json.dumps(rationale, ensure_ascii=False)


#: Judge parameters that would change what the call is; refused.
RESERVED_PARAMETERS = frozenset(
    {"model", "messages", "stream", "stream_options", "timeout", "extra_headers", "extra_query", "extra_body"}
)


def _exponential_jitter(initial: float, maximum: float) -> wait_exponential_jitter:
    """tenacity >= 9.1 calls the first wait ``multiplier`` (``initial`` is deprecated); older ones ``initial``."""
    if "multiplier" in inspect.signature(wait_exponential_jitter).parameters:
        return wait_exponential_jitter(multiplier=initial, max=maximum)
    return wait_exponential_jitter(initial=initial, max=maximum)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, JudgeReplyError):
        return True  # an invalid reply may be valid next time (sampling)
    if isinstance(exc, JudgeError):
        return False
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return _error_code(exc) != "insufficient_quota"
        return exc.status_code >= 500 or exc.status_code == 408
    return False


def _retry_after_seconds(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        return inner if isinstance(inner, dict) else {}
    return {}


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = _error_body(exc).get("code")
    return str(code) if code is not None else None


def _provider_message(exc: openai.APIStatusError) -> str:
    message = _error_body(exc).get("message")
    return str(message) if message else str(exc)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause else str(exc)


def _preview(text: str, limit: int = 200) -> str:
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
