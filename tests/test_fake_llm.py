"""Tests for tracejudge.testing.fake_llm: real HTTP on loopback, the real openai client."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from tracejudge.testing import FakeLLMServer, RecordedRequest

JUDGE = {"X-Tracejudge-Judge": "relevance"}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(hang_seconds=5) as srv:
        yield srv


@pytest.fixture
def client(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def ask(client: openai.OpenAI, text: str, **kwargs):
    return client.chat.completions.create(
        model="whatever", messages=[{"role": "user", "content": text}], **kwargs
    )


def score_of(reply) -> float:
    return json.loads(reply.choices[0].message.content)["score"]


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


# ----------------------------------------------------------------------------- basics


def test_default_reply_is_json_with_default_score_and_usage(server, client):
    messages = [
        {"role": "system", "content": "You are a judge."},
        {"role": "user", "content": "Rate this answer, please."},
    ]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)

    content = reply.choices[0].message.content
    parsed = json.loads(content)
    assert parsed["score"] == 0.85
    assert parsed["rationale"].startswith("tracejudge-fake-llm:")
    assert reply.model == "tracejudge-fake-llm"
    assert reply.system_fingerprint == "tracejudge-fake-llm"
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "stop"
    chars = sum(len(m["content"]) for m in messages)
    assert reply.usage.prompt_tokens == max(1, chars // 4)
    assert reply.usage.completion_tokens == max(1, len(content) // 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stats = server.stats()
    assert stats["requests"] == 1
    assert stats["by_outcome"] == {"ok": 1}
    assert stats["prompt_tokens"] == reply.usage.prompt_tokens
    assert stats["completion_tokens"] == reply.usage.completion_tokens
    assert stats["in_flight"] == 0


def test_default_score_option(client, server):
    server.default_score = 0.1
    assert score_of(ask(client, "hi")) == 0.1


def test_models_health_and_unknown_path(server, client):
    assert [m.id for m in client.models.list()] == ["tracejudge-fake-llm"]
    assert get_json(server.url + "/health") == (200, {"status": "ok"})
    status, body = get_json(server.url + "/v1/nope")
    assert status == 404
    assert set(body["error"]) == {"message", "type", "code", "param"}


def test_keep_alive_reuses_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        conn.request("POST", "/v1/chat/completions", body=payload, headers={"Content-Type": "application/json"})
        assert conn.getresponse().read() and conn.sock is not None
        first_socket = conn.sock
        conn.request("POST", "/chat/completions", body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["model"] == "tracejudge-fake-llm"
        assert conn.sock is first_socket
    finally:
        conn.close()


# ----------------------------------------------------------------------------- markers


def test_generic_and_judge_specific_score_markers(server, client):
    text = "answer [[tj:score=0.42]] [[tj:score:relevance=0.3]]"
    assert score_of(ask(client, text)) == 0.42
    assert score_of(ask(client, text, extra_headers=JUDGE)) == 0.3
    assert score_of(ask(client, text, extra_headers={"X-Tracejudge-Judge": "faithfulness"})) == 0.42
    assert [r.judge for r in server.requests] == [None, "relevance", "faithfulness"]
    assert len(server.prompts_for("relevance")) == 1
    assert server.prompts_for("relevance")[0][0]["content"] == text
    assert len(server.prompts_for()) == 3


def test_markers_in_content_parts(client):
    reply = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "see [[tj:score=0.11]]"}]}],
    )
    assert score_of(reply) == 0.11


def test_bad_marker_gives_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "[[tj:fault=teapot]]")
    assert "[[tj:fault=teapot]]" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "[[tj:scroe=0.3]]")
    assert "[[tj:scroe=0.3]]" in exc.value.message


# ----------------------------------------------------------------------------- faults


def test_429_has_retry_after(server, client):
    server.retry_after = 0.2
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client, "[[tj:fault=429]]")
    assert exc.value.status_code == 429
    assert exc.value.response.headers["retry-after"] == "0.2"
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.type == "rate_limit_error"


def test_quota_429_has_no_retry_after(client):
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client, "[[tj:fault=quota]]")
    assert exc.value.code == "insufficient_quota"
    assert "quota" in exc.value.message
    assert "retry-after" not in exc.value.response.headers


@pytest.mark.parametrize(
    ("kind", "error_class", "status"),
    [
        ("400", openai.BadRequestError, 400),
        ("401", openai.AuthenticationError, 401),
        ("403", openai.PermissionDeniedError, 403),
        ("404", openai.NotFoundError, 404),
        ("500", openai.InternalServerError, 500),
        ("502", openai.InternalServerError, 502),
        ("503", openai.InternalServerError, 503),
    ],
)
def test_error_faults(client, server, kind, error_class, status):
    with pytest.raises(error_class) as exc:
        ask(client, f"[[tj:fault={kind}]]")
    assert exc.value.status_code == status
    assert set(exc.value.body) == {"message", "type", "code", "param"}
    assert server.requests[-1].status == status
    assert server.requests[-1].outcome == kind
    if kind == "401":
        assert exc.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("malformed", "this is not json {"),
        ("missing_field", '{"rationale": "no score here"}'),
        ("empty", ""),
    ],
)
def test_bad_content_faults(client, kind, expected):
    assert ask(client, f"[[tj:fault={kind}]]").choices[0].message.content == expected


def test_out_of_range_and_fenced(client):
    assert score_of(ask(client, "[[tj:fault=out_of_range]]")) == 1.7
    fenced = ask(client, "[[tj:fault=fenced]]").choices[0].message.content
    assert fenced.startswith("```json\n") and fenced.endswith("\n```")
    assert json.loads(fenced.removeprefix("```json\n").removesuffix("\n```"))["score"] == 0.85


def test_drop_is_a_connection_error(server, client):
    with pytest.raises(openai.APIConnectionError) as exc:
        ask(client, "[[tj:fault=drop]]")
    assert not isinstance(exc.value, openai.APITimeoutError)
    assert server.requests[-1].status is None and server.requests[-1].outcome == "drop"
    assert score_of(ask(client, "after the drop")) == 0.85


def test_hang_times_out(server, client):
    with pytest.raises(openai.APITimeoutError):
        ask(client, "[[tj:fault=hang]]", timeout=0.5)
    assert server.stats()["by_outcome"] == {"hang": 1}
    assert server.requests[-1].status is None
    # stop() (from the fixture) wakes the hung request instead of waiting hang_seconds


def test_fault_count_suffix(server, client):
    text = "judge me [[tj:fault=503x2]]"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client, text)
    assert score_of(ask(client, text)) == 0.85
    # another judge, or other text, has its own counter
    with pytest.raises(openai.InternalServerError):
        ask(client, text, extra_headers=JUDGE)
    with pytest.raises(openai.InternalServerError):
        ask(client, "other text [[tj:fault=503x2]]")
    assert server.stats()["by_outcome"] == {"503": 4, "ok": 1}


def test_judge_specific_fault(client):
    text = "[[tj:fault:relevance=401]]"
    assert score_of(ask(client, text)) == 0.85
    with pytest.raises(openai.AuthenticationError):
        ask(client, text, extra_headers=JUDGE)


def test_script_fifo_wins_over_markers(server, client):
    server.script("429", "ok:0.3")
    with pytest.raises(openai.RateLimitError):
        ask(client, "[[tj:score=0.9]]")
    assert score_of(ask(client, "[[tj:fault=500]]")) == 0.3
    assert score_of(ask(client, "[[tj:score=0.9]]")) == 0.9  # queue empty again
    with pytest.raises(ValueError):
        server.script("teapot")


def test_reject_response_format(server, client):
    server.reject_response_format = True
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "hi", response_format=schema)
    assert exc.value.status_code == 400
    assert exc.value.body == {
        "message": "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
        "with this model.",
        "type": "invalid_request_error",
        "param": "response_format",
        "code": None,
    }
    assert score_of(ask(client, "hi")) == 0.85


# ----------------------------------------------------------------------------- concurrency & records


def test_concurrent_requests_overlap():
    async def run(server: FakeLLMServer) -> list[float]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0) as c:
            replies = await asyncio.gather(
                *(
                    c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                    for i in range(20)
                )
            )
        return [score_of(r) for r in replies]

    with FakeLLMServer(latency_ms=200) as server:
        assert asyncio.run(run(server)) == [0.85] * 20
        stats = server.stats()
    assert stats["requests"] == 20
    assert stats["max_concurrent"] >= 15
    assert stats["in_flight"] == 0


def test_authorization_is_redacted_and_reset_clears(server, client):
    ask(client, "hello", extra_headers=JUDGE)
    (record,) = server.requests
    assert isinstance(record, RecordedRequest)
    assert record.headers["authorization"] == "<redacted>"
    assert "sk-test" not in repr(server.requests)
    assert record.headers["x-tracejudge-judge"] == "relevance"
    assert record.path == "/v1/chat/completions" and record.method == "POST"
    assert record.body["messages"] == [{"role": "user", "content": "hello"}]
    assert record.status == 200 and record.outcome == "ok"
    assert record.finished_at is not None and record.finished_at >= record.started_at

    server.script("500")
    server.reset()
    assert server.requests == []
    assert server.stats()["requests"] == 0
    assert score_of(ask(client, "after reset")) == 0.85  # script queue was cleared


def test_stop_is_idempotent_and_port_is_free_after():
    server = FakeLLMServer().start()
    port = server.port
    assert port != 0 and server.base_url == f"http://127.0.0.1:{port}/v1"
    server.stop()
    server.stop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ----------------------------------------------------------------------------- CLI


def test_cli_main_runs_until_sigterm():
    from tracejudge.testing.processes import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracejudge.testing.fake_llm", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # The server prints its banner once it listens: wait for that line, not for a clock.
        banner = proc.stdout.readline()
        assert banner.strip() == (
            f"tracejudge-fake-llm (a test server, not a real model) listening on http://127.0.0.1:{port}/v1"
        ), (banner, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        assert get_json(f"http://127.0.0.1:{port}/health") == (200, {"status": "ok"})

        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0) as c:
            assert score_of(ask(c, "hi [[tj:score=0.5]]")) == 0.5

        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout.strip() == ""  # nothing but the banner
    assert "Warning" not in stderr


def test_help_says_how_to_point_judges_at_it_and_steer_replies(capsys):
    """A new user reads `tracejudge fake-llm --help`: every option explained, the markers and fault kinds listed."""
    from tracejudge.testing.fake_llm import FAULT_KINDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "TRACEJUDGE_LLM_BASE_URL=http://HOST:PORT/v1" in out and "[[tj:score=0.42]]" in out
    assert all(kind in out for kind in FAULT_KINDS)
    assert "score of a reply without a score marker" in out and "delay before each reply" in out
