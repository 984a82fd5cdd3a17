"""LLMClient against the bundled fake server: real HTTP on loopback, through the real openai client.

No wall-clock assertions: everything is checked from the server's own records
(requests, bodies, recorded timestamps) and from the client's results/errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tracejudge.judges import JudgeError, JudgeReplyError, LLMClient
from tracejudge.judges import errors
from tracejudge.judges.client import JUDGE_HEADER
from tracejudge.testing import FakeLLMServer

API_KEY = "sk-test-tracejudge-SECRET-7f3a9c"
RETRY_AFTER = 0.2
MODEL = "gpt-4o-mini"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(retry_after=RETRY_AFTER, hang_seconds=3) as srv:
        yield srv


def make_client(server: FakeLLMServer, *, timeout: float = 5.0, attempts: int = 3) -> LLMClient:
    return LLMClient(
        base_url=server.base_url,
        api_key=API_KEY,
        timeout_seconds=timeout,
        max_attempts=attempts,
        backoff_initial=0.01,
        backoff_max=0.05,
    )


def messages(text: str = "Rate this output.") -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": text}]


def score(server: FakeLLMServer, text: str = "Rate this output.", *, judge: str = "relevance", **client_kwargs):
    """One call on a fresh client; returns the LLMReply or the JudgeError raised."""

    async def go():
        client = make_client(server, **client_kwargs)
        try:
            return await client.score(model=MODEL, messages=messages(text), judge=judge)
        except JudgeError as exc:
            return exc
        finally:
            await client.aclose()

    return asyncio.run(go())


def chat_requests(server: FakeLLMServer):
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), getattr(exc, "message", "")):
        assert API_KEY not in text
        assert "SECRET" not in text


# ----------------------------------------------------------------------------- success


def test_success_records_tokens_and_sends_judge_header(server):
    reply = score(server, "Rate: hello [[tj:score=0.42]]", judge="coherence")

    assert not isinstance(reply, Exception)
    assert reply.reply.score == 0.42
    assert reply.reply.rationale.startswith("tracejudge-fake-llm")
    assert reply.attempts == 1
    assert reply.model == MODEL
    stats = server.stats()
    assert reply.tokens.prompt == stats["prompt_tokens"] > 0
    assert reply.tokens.completion == stats["completion_tokens"] > 0

    (request,) = chat_requests(server)
    assert request.judge == "coherence"
    assert request.headers[JUDGE_HEADER.lower()] == "coherence"
    assert request.headers["authorization"] == "<redacted>"  # the server got a key, and did not keep it
    assert request.body["model"] == MODEL
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["messages"][1]["content"].startswith("Rate: hello")


def test_per_judge_score_marker(server):
    text = "[[tj:score=0.9]] [[tj:score:relevance=0.3]]"
    assert score(server, text, judge="relevance").reply.score == 0.3
    assert score(server, text, judge="coherence").reply.score == 0.9


def test_fenced_reply_is_accepted(server):
    server.script("fenced")
    reply = score(server)
    assert reply.reply.score == 0.85 and reply.attempts == 1


def score_with(server: FakeLLMServer, parameters: dict, text: str = "Rate this output."):
    async def go():
        client = make_client(server)
        try:
            return await client.score(model=MODEL, messages=messages(text), judge="t", parameters=parameters)
        except JudgeError as exc:
            return exc
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_parameters_are_sent_and_unknown_ones_go_in_the_body(server):
    # top_k is not an openai SDK argument, but OpenAI-compatible servers (vLLM, Ollama) take it
    reply = score_with(server, {"temperature": 0.0, "seed": 7, "top_k": 40})
    assert not isinstance(reply, Exception), reply
    body = chat_requests(server)[0].body
    assert (body["temperature"], body["seed"], body["top_k"]) == (0.0, 7, 40)
    assert body["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("reserved", [{"model": "other"}, {"messages": []}, {"stream": True}])
def test_reserved_parameters_are_refused_without_a_request(server, reserved):
    err = score_with(server, reserved)
    assert isinstance(err, JudgeError) and err.code == errors.BAD_REQUEST
    assert err.attempts == 0 and next(iter(reserved)) in err.message
    assert chat_requests(server) == []


def test_judge_response_format_wins_and_is_dropped_on_fallback(server):
    reply = score_with(server, {"response_format": {"type": "json_object"}})
    assert not isinstance(reply, Exception), reply
    assert chat_requests(server)[0].body["response_format"] == {"type": "json_object"}

    server.reset()
    server.reject_response_format = True
    reply = score_with(server, {"response_format": {"type": "json_object"}, "temperature": 0.0})
    assert not isinstance(reply, Exception), reply
    first, second = chat_requests(server)
    assert first.status == 400 and "response_format" in first.body
    assert second.status == 200 and "response_format" not in second.body and second.body["temperature"] == 0.0


# ----------------------------------------------------------------------------- retries


def test_429_retry_after_is_honoured_then_success(server):
    server.script("429", "ok")
    reply = score(server)

    assert not isinstance(reply, Exception), reply
    assert reply.attempts == 2
    first, second = chat_requests(server)
    assert (first.status, first.outcome) == (429, "429")
    assert (second.status, second.outcome) == (200, "ok")
    # the server's own timestamps: the retry came no earlier than Retry-After allowed
    assert second.started_at - first.finished_at >= RETRY_AFTER * 0.9


def test_429_until_attempts_run_out_is_rate_limited(server):
    server.retry_after = 0.01
    server.script("429", "429")
    err = score(server, attempts=2)
    assert isinstance(err, JudgeError) and err.code == errors.RATE_LIMITED
    assert err.attempts == 2 and len(chat_requests(server)) == 2


def test_500_until_attempts_run_out_is_provider_error(server):
    err = score(server, "[[tj:fault=500]]", attempts=3)

    assert isinstance(err, JudgeError)
    assert err.code == errors.PROVIDER_ERROR
    assert err.attempts == 3
    assert "500" in err.message and "internal server error" in err.message
    requests = chat_requests(server)
    assert len(requests) == 3 and all(r.status == 500 for r in requests)


@pytest.mark.parametrize("kind", ["502", "503"])
def test_502_503_are_retried(server, kind):
    reply = score(server, f"[[tj:fault={kind}x2]] [[tj:score=0.6]]", attempts=3)
    assert not isinstance(reply, Exception), reply
    assert reply.attempts == 3 and reply.reply.score == 0.6
    assert [r.status for r in chat_requests(server)] == [int(kind), int(kind), 200]


def test_hang_past_timeout_is_timeout(server):
    err = score(server, "[[tj:fault=hang]]", timeout=0.3, attempts=2)

    assert isinstance(err, JudgeError)
    assert err.code == errors.TIMEOUT
    assert err.attempts == 2
    assert "0.3 s" in err.message  # the timeout actually used, not the client default
    requests = chat_requests(server)
    assert len(requests) == 2
    assert all(r.outcome == "hang" and r.status is None for r in requests)


def test_hang_once_then_success(server):
    reply = score(server, "[[tj:fault=hangx1]]", timeout=0.3, attempts=2)
    assert not isinstance(reply, Exception), reply
    assert reply.attempts == 2
    assert [r.outcome for r in chat_requests(server)] == ["hang", "ok"]


def test_dropped_connection_retried_then_connection_error(server):
    err = score(server, "[[tj:fault=drop]]", attempts=3)
    assert isinstance(err, JudgeError)
    assert err.code == errors.CONNECTION_ERROR
    assert err.attempts == 3
    requests = chat_requests(server)
    assert len(requests) == 3 and all(r.outcome == "drop" for r in requests)


def test_dropped_connection_once_then_success(server):
    reply = score(server, "[[tj:fault=dropx1]]", attempts=3)
    assert not isinstance(reply, Exception), reply
    assert reply.attempts == 2
    assert [r.outcome for r in chat_requests(server)] == ["drop", "ok"]


# ----------------------------------------------------------------------------- response_format fallback


def test_response_format_rejected_falls_back_and_is_remembered(server):
    server.reject_response_format = True

    async def go():
        client = make_client(server)
        try:
            first = await client.score(model=MODEL, messages=messages("[[tj:score=0.7]]"), judge="a")
            second = await client.score(model=MODEL, messages=messages("[[tj:score=0.6]]"), judge="b")
            other_model = await client.score(model="other-model", messages=messages(), judge="c")
            return first, second, other_model
        finally:
            await client.aclose()

    first, second, other_model = asyncio.run(go())
    assert (first.reply.score, second.reply.score) == (0.7, 0.6)
    assert first.attempts == 1 and second.attempts == 1
    requests = chat_requests(server)
    # 1: with response_format -> 400; 2: the same call without it; 3: the next call goes straight without it
    assert [("response_format" in r.body, r.status) for r in requests[:3]] == [(True, 400), (False, 200), (False, 200)]
    assert requests[0].outcome == "response_format_rejected"
    assert [r.judge for r in requests[:3]] == ["a", "a", "b"]
    # remembered per model: another model tries response_format first again
    assert [("response_format" in r.body, r.status) for r in requests[3:]] == [(True, 400), (False, 200)]
    assert requests[4].body["model"] == "other-model"
    assert other_model.reply.score == 0.85


def test_plain_400_is_not_retried_and_no_fallback(server):
    server.script("400")
    err = score(server, attempts=3)
    assert isinstance(err, JudgeError) and err.code == errors.BAD_REQUEST
    assert err.attempts == 1
    assert len(chat_requests(server)) == 1


# ----------------------------------------------------------------------------- provider refusals


def test_401_fails_at_once_then_fails_fast_without_a_request(server):
    async def go():
        client = make_client(server, attempts=3)
        try:
            with pytest.raises(JudgeError) as first:
                await client.score(model=MODEL, messages=messages("[[tj:fault=401]]"), judge="a")
            sent_after_first = len(chat_requests(server))
            with pytest.raises(JudgeError) as second:
                await client.score(model=MODEL, messages=messages("fine now"), judge="b")
            sent_after_second = len(chat_requests(server))
            client.clear_provider_failure()
            third = await client.score(model=MODEL, messages=messages("fine now"), judge="c")
            return first.value, second.value, third, sent_after_first, sent_after_second
        finally:
            await client.aclose()

    first, second, third, sent_after_first, sent_after_second = asyncio.run(go())
    assert first.code == errors.AUTHENTICATION_ERROR and first.attempts == 1
    assert "Incorrect API key" in first.message
    assert sent_after_first == 1
    assert second.code == errors.AUTHENTICATION_ERROR
    assert "failing fast" in second.message
    assert second.attempts == 0
    assert sent_after_second == 1  # nothing was sent for the second call
    assert third.attempts == 1 and len(chat_requests(server)) == 2
    for exc in (first, second):
        assert_no_secret(exc)


@pytest.mark.parametrize(("kind", "code"), [("403", errors.PERMISSION_DENIED), ("404", errors.MODEL_NOT_FOUND)])
def test_403_404_not_retried(server, kind, code):
    err = score(server, f"[[tj:fault={kind}]]", attempts=3)
    assert isinstance(err, JudgeError) and err.code == code and err.attempts == 1
    assert len(chat_requests(server)) == 1


def test_quota_exceeded_not_retried_and_fails_fast(server):
    async def go():
        client = make_client(server, attempts=3)
        try:
            with pytest.raises(JudgeError) as first:
                await client.score(model=MODEL, messages=messages("[[tj:fault=quota]]"), judge="a")
            with pytest.raises(JudgeError) as second:
                await client.score(model=MODEL, messages=messages(), judge="b")
            return first.value, second.value
        finally:
            await client.aclose()

    first, second = asyncio.run(go())
    assert first.code == errors.QUOTA_EXCEEDED and first.attempts == 1
    assert "quota" in first.message
    assert second.code == errors.QUOTA_EXCEEDED and second.attempts == 0
    assert len(chat_requests(server)) == 1


def test_refusal_during_retries_stops_other_calls_retrying(server):
    """A call about to retry a 503 fails fast once another call on the client got a 401.

    Ordered with the client's rate-limiter hook, not with sleeps: the flaky call's
    retry waits until the refused call has finished.
    """
    async def go():
        auth_done = asyncio.Event()
        calls: list[str] = []

        async def limiter(model: str) -> None:
            calls.append(model)
            if model == "flaky-model" and calls.count("flaky-model") == 2:
                await auth_done.wait()

        client = LLMClient(
            base_url=server.base_url, api_key=API_KEY, max_attempts=5,
            backoff_initial=0.01, backoff_max=0.01, rate_limiter=limiter,
        )

        async def auth_call():
            try:
                return await client.score(model="auth-model", messages=messages("[[tj:fault=401]]"), judge="auth")
            finally:
                auth_done.set()

        try:
            return await asyncio.gather(
                client.score(model="flaky-model", messages=messages("[[tj:fault=503]]"), judge="flaky"),
                auth_call(),
                return_exceptions=True,
            )
        finally:
            await client.aclose()

    flaky, auth = asyncio.run(go())
    assert isinstance(auth, JudgeError) and auth.code == errors.AUTHENTICATION_ERROR
    assert isinstance(flaky, JudgeError) and flaky.code == errors.AUTHENTICATION_ERROR
    assert "failing fast" in flaky.message
    assert flaky.attempts == 1  # one 503 sent, then no more requests
    assert [r.judge for r in chat_requests(server)].count("flaky") == 1


# ----------------------------------------------------------------------------- bad replies


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("malformed", errors.REPLY_NOT_JSON),
        ("missing_field", errors.REPLY_MISSING_FIELD),
        ("out_of_range", errors.REPLY_OUT_OF_RANGE),
        ("empty", errors.REPLY_EMPTY),
    ],
)
def test_bad_replies_fail_only_when_every_attempt_was_invalid(server, kind, code):
    err = score(server, f"[[tj:fault={kind}]]", attempts=3)
    assert isinstance(err, JudgeReplyError)
    assert err.code == code  # the last reply's error
    assert err.attempts == 3
    assert len(chat_requests(server)) == 3
    assert err.tokens.prompt > 0  # three paid-for replies, counted


@pytest.mark.parametrize("kind", ["malformed", "missing_field", "out_of_range", "empty"])
def test_a_bad_reply_is_retried_and_the_next_valid_one_counts(server, kind):
    reply = score(server, f"[[tj:fault={kind}x1]] [[tj:score=0.4]]", attempts=3)
    assert reply.reply.score == 0.4
    assert reply.attempts == 2 and len(chat_requests(server)) == 2


def test_bad_replies_are_retried_only_within_max_attempts(server):
    err = score(server, "[[tj:fault=malformedx2]] [[tj:score=0.4]]", attempts=2)
    assert isinstance(err, JudgeReplyError) and err.code == errors.REPLY_NOT_JSON
    assert err.attempts == 2 and len(chat_requests(server)) == 2


# ----------------------------------------------------------------------------- secrets


def test_api_key_never_in_messages_or_repr(server):
    client = make_client(server)
    assert API_KEY not in repr(client) and API_KEY not in str(client)
    asyncio.run(client.aclose())

    collected: list[BaseException] = []
    for text, kwargs in [
        ("[[tj:fault=401]]", {}),
        ("[[tj:fault=403]]", {}),
        ("[[tj:fault=404]]", {}),
        ("[[tj:fault=quota]]", {}),
        ("[[tj:fault=400]]", {}),
        ("[[tj:fault=500]]", {"attempts": 1}),
        ("[[tj:fault=drop]]", {"attempts": 1}),
        ("[[tj:fault=hang]]", {"attempts": 1, "timeout": 0.2}),
        ("[[tj:fault=malformed]]", {}),
    ]:
        err = score(server, text, **kwargs)
        assert isinstance(err, JudgeError), text
        collected.append(err)
    for err in collected:
        assert_no_secret(err)


def test_api_key_echoed_by_a_provider_is_redacted(server):
    """Some proxies echo the key in their error message; it must not reach our messages."""
    import openai

    from tracejudge.judges.client import _httpx

    client = make_client(server)
    try:
        request = _httpx.Request("POST", server.base_url + "/chat/completions")
        fake = openai.AuthenticationError(
            f"Incorrect API key provided: {API_KEY}",
            response=_httpx.Response(401, request=request),
            body={"error": {"message": f"Incorrect API key provided: {API_KEY}", "code": "invalid_api_key"}},
        )
        error = client._translate(fake)
    finally:
        asyncio.run(client.aclose())
    assert error.code == errors.AUTHENTICATION_ERROR
    assert_no_secret(error)
    assert "<redacted>" in error.message


def test_per_call_timeout_overrides_client_default_and_is_reported(server):
    async def go():
        client = make_client(server, timeout=30.0, attempts=3)
        try:
            return await client.score(
                model=MODEL, messages=messages("[[tj:fault=hang]]"), judge="t", timeout_seconds=0.2, max_attempts=1
            )
        except JudgeError as exc:
            return exc
        finally:
            await client.aclose()

    err = asyncio.run(go())
    assert isinstance(err, JudgeError) and err.code == errors.TIMEOUT
    assert err.attempts == 1 and len(chat_requests(server)) == 1
    assert "within 0.2 s" in err.message


def test_a_200_that_is_not_a_chat_completion_is_a_clear_provider_error(server):
    """The reply is read as plain JSON: a proxy's HTML page with a 200 fails as the provider's fault, named."""
    import openai

    from tracejudge.judges.client import _httpx, completion_from_json

    request = _httpx.Request("POST", server.base_url + "/chat/completions")
    response = _httpx.Response(200, content=b"<html>gateway login</html>", request=request)
    with pytest.raises(openai.APIResponseValidationError) as caught:
        completion_from_json(response)
    client = make_client(server)
    try:
        error = client._translate(caught.value)
    finally:
        asyncio.run(client.aclose())
    assert error.code == errors.PROVIDER_ERROR
    assert "not a chat completion" in error.message and "gateway login" in error.message


def test_usage_and_logprobs_are_read_from_the_json_body():
    from tracejudge.judges.client import _httpx, completion_from_json

    body = {
        "choices": [{"message": {"content": '{"rationale": "r", "level": 2}'},
                     "logprobs": {"content": [{"token": "2", "logprob": -0.1, "top_logprobs": []}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3},
    }
    completion = completion_from_json(_httpx.Response(200, json=body, request=_httpx.Request("POST", "http://x/")))
    assert completion.content == '{"rationale": "r", "level": 2}'
    assert (completion.usage.prompt, completion.usage.completion) == (11, 3)
    assert completion.logprobs == [{"token": "2", "logprob": -0.1, "top_logprobs": []}]
