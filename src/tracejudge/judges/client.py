"""The LLM side of a judge call: one ``openai`` async client, JSON replies, timeouts, retries.

One :class:`LLMClient` (and so one HTTP connection pool) serves every judge
call of a process. Each call asks for a JSON ``{score, rationale}`` reply
through ``response_format`` with a JSON schema; an endpoint that rejects
``response_format`` with a 400 is asked again without it, and remembered.

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
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import openai
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from tracejudge.judges import errors
from tracejudge.judges.errors import JudgeError, JudgeReplyError
from tracejudge.judges.model import JudgeReply, TokenUsage

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

REPLY_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "judge_reply",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "rationale": {"type": "string"},
            },
            "required": ["score", "rationale"],
            "additionalProperties": False,
        },
    },
}
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
    ) -> LLMReply:
        """Ask the model for a ``{score, rationale}`` reply; raise :class:`JudgeError` on failure.

        ``limiter`` (optional) is waited on before every attempt and told of every 429.
        """
        attempts = 0
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
                        if self.rate_limiter is not None:
                            await self.rate_limiter(model)
                        if limiter is not None:
                            await limiter.acquire(model)
                        self._fail_fast_if_refused()  # refused while we waited for a slot
                    attempts += 1
                    try:
                        content, usage = await self._complete(model, messages, judge, request_parameters, timeout)
                    except openai.RateLimitError as exc:
                        if limiter is not None and _error_code(exc) != "insufficient_quota":
                            wait = _retry_after_seconds(exc)
                            await limiter.cool_down(model, min(wait if wait is not None else 1.0, RETRY_AFTER_MAX_SECONDS))
                        raise
                    tokens.prompt += usage.prompt
                    tokens.completion += usage.completion
                    # An unusable reply (not JSON, a field missing, out of range) is
                    # retried like a transient failure; the last one's error is kept.
                    reply = parse_reply(content)
        except JudgeError as exc:
            exc.attempts = attempts
            if isinstance(exc, JudgeReplyError):
                exc.tokens = tokens  # the replies were paid for even though they were unusable
            raise
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            error = self._translate(exc, timeout)
            error.attempts = attempts
            if error.code in errors.PROVIDER_WIDE:
                self._provider_failure = (error, time.monotonic())
            raise error from exc
        return LLMReply(reply=reply, tokens=tokens, attempts=attempts, model=model)

    async def _complete(
        self, model: str, messages: list[dict[str, str]], judge: str | None, parameters: dict[str, Any], timeout: float
    ) -> tuple[str, TokenUsage]:
        headers = {JUDGE_HEADER: judge} if judge else None
        use_format = model not in self._no_response_format
        plain = {k: v for k, v in parameters.items() if k != "response_format"}
        # A judge's own response_format (e.g. json_object) wins over the JSON schema.
        formatted = {"response_format": REPLY_SCHEMA, **parameters} if use_format else plain
        async with asyncio.timeout(timeout):
            try:
                completion = await self._openai.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    extra_headers=headers,
                    timeout=timeout,
                    **formatted,
                )
            except openai.BadRequestError as exc:
                if not use_format or not _RESPONSE_FORMAT_WORDS.search(str(exc)):
                    raise
                log.info("endpoint %s rejects response_format for model %s; using plain JSON instructions", self.host, model)
                self._no_response_format.add(model)
                completion = await self._openai.chat.completions.create(
                    model=model, messages=messages, extra_headers=headers, timeout=timeout, **plain  # type: ignore[arg-type]
                )
        usage = TokenUsage()
        if completion.usage is not None:
            usage = TokenUsage(prompt=completion.usage.prompt_tokens or 0, completion=completion.usage.completion_tokens or 0)
        content = completion.choices[0].message.content if completion.choices else None
        return content or "", usage

    def _request_parameters(self, parameters: dict[str, Any], judge: str | None) -> dict[str, Any]:
        """A judge's ``parameters`` as keyword arguments for ``chat.completions.create``.

        Parameters the SDK knows (temperature, seed, max_tokens, ...) are passed as
        they are; others (``top_k`` of vLLM or Ollama, ...) go into the JSON body via
        ``extra_body`` instead of making every call fail with a TypeError. Parameters
        that would change what the call is (model, messages, streaming) are refused.
        """
        reserved = sorted(RESERVED_PARAMETERS.intersection(parameters))
        if reserved:
            raise JudgeError(
                errors.BAD_REQUEST,
                f"judge {judge!r}: parameter(s) {reserved} cannot be set in a judge's parameters "
                "(tracejudge sets them itself)",
            )
        known = _create_parameters(self._openai)
        kwargs = {k: v for k, v in parameters.items() if k in known}
        extra = {k: v for k, v in parameters.items() if k not in known}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

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

    >>> parse_reply('{"score": 0.8, "rationale": "ok"}').score
    0.8
    """
    text = (content or "").strip()
    if not text:
        raise JudgeReplyError(errors.REPLY_EMPTY, "the judge model replied with empty content")
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JudgeReplyError(
            errors.REPLY_NOT_JSON, f"the judge reply is not valid JSON ({exc.msg} at char {exc.pos}): {_preview(text)}"
        ) from None
    if not isinstance(data, dict):
        raise JudgeReplyError(errors.REPLY_INVALID, f"the judge reply is JSON but not an object: {_preview(text)}")
    if "score" not in data:
        raise JudgeReplyError(
            errors.REPLY_MISSING_FIELD, f"the judge reply has no 'score' field (fields: {sorted(data)}): {_preview(text)}"
        )
    score = data["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise JudgeReplyError(errors.REPLY_INVALID, f"the judge reply's score is not a number: {score!r}")
    if not 0.0 <= float(score) <= 1.0:
        raise JudgeReplyError(errors.REPLY_OUT_OF_RANGE, f"the judge reply's score {score!r} is outside 0..1")
    if "rationale" in data and not isinstance(data["rationale"], str):
        data["rationale"] = json.dumps(data["rationale"], ensure_ascii=False)
    try:
        return JudgeReply.model_validate(data)
    except ValidationError as exc:  # pragma: no cover - covered by the checks above
        raise JudgeReplyError(errors.REPLY_INVALID, f"invalid judge reply: {exc.errors()[0]['msg']}") from None


#: Judge parameters that would change what the call is; refused.
RESERVED_PARAMETERS = frozenset(
    {"model", "messages", "stream", "stream_options", "timeout", "extra_headers", "extra_query", "extra_body"}
)
_CREATE_PARAMETERS: frozenset[str] | None = None


def _create_parameters(client: openai.AsyncOpenAI) -> frozenset[str]:
    """The keyword arguments ``chat.completions.create`` of the installed SDK accepts."""
    global _CREATE_PARAMETERS
    if _CREATE_PARAMETERS is None:
        signature = inspect.signature(client.chat.completions.create)
        _CREATE_PARAMETERS = frozenset(
            name for name, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
        ) - RESERVED_PARAMETERS
    return _CREATE_PARAMETERS


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
