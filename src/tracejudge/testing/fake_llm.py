"""A local OpenAI-compatible *test* server for tracejudge.

What: a tiny HTTP/1.1 server on loopback that speaks enough of the OpenAI REST API
(``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``) for tracejudge's
judges to talk to it through the real ``openai`` client. Every reply says it comes from
a test server (``"model": "tracejudge-fake-llm"``); it never pretends to be a real model.

Why: tests, demos and benchmarks need an endpoint whose behaviour we fully control,
over real HTTP: fixed scores, added latency, rate limits, server errors, malformed
replies, connections dropped mid-request, hangs, and hundreds of concurrent requests.
It is built on ``asyncio.start_server`` (standard library only) and runs its own event
loop in a daemon thread, so one server handles many overlapping requests without a
thread per request.

Behaviour is steered from the prompt with markers (``[[tj:score=0.42]]``,
``[[tj:score:relevance=0.3]]``, ``[[tj:latency=500]]``, ``[[tj:fault=503x2]]``,
``[[tj:fault:relevance=429]]``) or from the test with :meth:`FakeLLMServer.script`.
A request whose reply schema asks for a ``level`` (tracejudge's ``logprobs``
scoring mode) gets a level reply and, when it asked for ``logprobs``, token
logprobs whose level digit carries the distribution of
``[[tj:levelprobs=0.1,0.2,0.4,0.2,0.1]]`` (default: all on the level nearest
the score); ``[[tj:nologprobs]]`` or ``logprobs=False`` leaves them out.
Run it stand-alone with ``python -m tracejudge.testing.fake_llm --port 8089``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import json
import math
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["FakeLLMServer", "RecordedRequest", "FAULT_KINDS", "main"]

MODEL_ID = "tracejudge-fake-llm"
OWNER = "tracejudge-test-server"
JUDGE_HEADER = "x-tracejudge-judge"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 0  # 0 = let the OS pick a free port
DEFAULT_CLI_PORT = 8089
DEFAULT_LATENCY_MS = 0.0
DEFAULT_SCORE = 0.85
DEFAULT_RETRY_AFTER: float = 1
DEFAULT_HANG_SECONDS = 300.0
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
LISTEN_BACKLOG = 2048  # benchmarks open ~500 connections at once

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})
HEALTH_PATH = "/health"
REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key"})

#: Fault kinds usable in ``[[tj:fault=KIND]]`` markers and in :meth:`FakeLLMServer.script`.
FAULT_KINDS = frozenset(
    {
        "429", "quota", "500", "502", "503", "400", "401", "403", "404",
        "hang", "drop", "malformed", "missing_field", "out_of_range", "empty", "fenced",
    }
)
OK = "ok"

_MARKER_RE = re.compile(r"\[\[tj:(.*?)\]\]", re.DOTALL)
_SCORE_RE = re.compile(r"score(?::(?P<judge>[^=\]]+))?=(?P<value>.*)", re.DOTALL)
_LATENCY_RE = re.compile(r"latency=(?P<value>.*)", re.DOTALL)
_LEVELPROBS_RE = re.compile(r"levelprobs=(?P<value>.*)", re.DOTALL)
NO_LOGPROBS_MARKER = "nologprobs"
_FAULT_RE = re.compile(r"fault(?::(?P<judge>[^=\]]+))?=(?P<kind>.+?)(?:x(?P<count>\d+))?", re.DOTALL)

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    411: "Length Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}

# status, type, code, message for each error fault kind
_ERROR_FAULTS: dict[str, tuple[int, str, str | None, str]] = {
    "429": (429, "rate_limit_error", "rate_limit_exceeded",
            "Rate limit reached (tracejudge-fake-llm, scripted)"),
    "quota": (429, "insufficient_quota", "insufficient_quota",
              "You exceeded your current quota (tracejudge-fake-llm)"),
    "400": (400, "invalid_request_error", None, "tracejudge-fake-llm: bad request (scripted)"),
    "401": (401, "invalid_request_error", "invalid_api_key",
            "Incorrect API key provided (tracejudge-fake-llm)"),
    "403": (403, "invalid_request_error", "forbidden",
            "tracejudge-fake-llm: forbidden (scripted)"),
    "404": (404, "invalid_request_error", "model_not_found",
            "tracejudge-fake-llm: model not found (scripted)"),
    "500": (500, "server_error", None, "tracejudge-fake-llm: internal server error (scripted)"),
    "502": (502, "server_error", None, "tracejudge-fake-llm: bad gateway (scripted)"),
    "503": (503, "server_error", None, "tracejudge-fake-llm: service unavailable (scripted)"),
}

REJECT_SCHEMA_BOUNDS_MESSAGE = (
    "Invalid schema for response_format 'judge_reply': In context=('properties', 'score'), "
    "'minimum' is not permitted. (tracejudge-fake-llm)"
)
REJECT_RESPONSE_FORMAT_MESSAGE = (
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."
)


@dataclasses.dataclass
class RecordedRequest:
    """One HTTP request the server received (secrets redacted)."""

    path: str
    method: str
    body: dict[str, Any] | None
    judge: str | None
    headers: dict[str, str]
    started_at: float
    finished_at: float | None = None
    status: int | None = None  # None when the connection was dropped or hung
    outcome: str | None = None  # the fault KIND, "ok", or e.g. "bad_marker" / "not_found"
    #: sha256 of the Authorization header as received (the header itself is redacted), so a test can
    #: check which key was sent without the server keeping it.
    authorization_sha256: str | None = None


class _BadRequest(Exception):
    """A request the server answers with 400 (bad JSON, bad marker, ...)."""

    def __init__(self, message: str, *, param: str | None = None, outcome: str = "bad_request"):
        super().__init__(message)
        self.message, self.param, self.outcome = message, param, outcome


@dataclasses.dataclass(frozen=True)
class _FaultMarker:
    raw: str
    judge: str | None
    kind: str
    count: int | None


@dataclasses.dataclass
class _Markers:
    score: float | None = None
    judge_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    latency_ms: float = 0.0
    faults: list[_FaultMarker] = dataclasses.field(default_factory=list)
    level_probs: list[float] | None = None
    no_logprobs: bool = False


@dataclasses.dataclass
class _Plan:
    """What to answer to one chat request."""

    outcome: str  # fault kind or "ok"
    score: float
    reason: str
    latency_ms: float
    level_count: int = 0  # > 0: answer with a level number 1..level_count (the logprobs mode's schema)
    level_probs: list[float] | None = None
    logprobs: bool = False  # the request asked for logprobs and the server gives them


# ----------------------------------------------------------------------------- helpers


def _message_texts(messages: Any) -> list[str]:
    """The text of every message; content may be a string or a list of parts."""
    texts: list[str] = []
    if not isinstance(messages, list):
        return texts
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part, str):
                    texts.append(part)
    return texts


def _parse_number(text: str, marker: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise _BadRequest(
            f"tracejudge-fake-llm: bad marker [[tj:{marker}]]: {text!r} is not a number",
            outcome="bad_marker",
        ) from None


def _parse_markers(text: str) -> _Markers:
    """Parse every ``[[tj:...]]`` marker in ``text``; raise _BadRequest on a bad one."""
    markers = _Markers()
    for inner in _MARKER_RE.findall(text):
        if m := _SCORE_RE.fullmatch(inner):
            value = _parse_number(m["value"], inner)
            if m["judge"]:
                markers.judge_scores.setdefault(m["judge"].strip(), value)
            elif markers.score is None:
                markers.score = value
        elif m := _LATENCY_RE.fullmatch(inner):
            markers.latency_ms += max(0.0, _parse_number(m["value"], inner))
        elif m := _LEVELPROBS_RE.fullmatch(inner):
            probs = [_parse_number(part, inner) for part in m["value"].split(",")]
            if any(p < 0 for p in probs) or sum(probs) <= 0:
                raise _BadRequest(
                    f"tracejudge-fake-llm: bad marker [[tj:{inner}]]: probabilities must be >= 0 with a positive sum",
                    outcome="bad_marker",
                )
            markers.level_probs = probs
        elif inner.strip() == NO_LOGPROBS_MARKER:
            markers.no_logprobs = True
        elif m := _FAULT_RE.fullmatch(inner):
            kind = m["kind"].strip()
            if kind not in FAULT_KINDS:
                raise _BadRequest(
                    f"tracejudge-fake-llm: bad marker [[tj:{inner}]]: unknown fault kind {kind!r}; "
                    f"known kinds: {', '.join(sorted(FAULT_KINDS))}",
                    outcome="bad_marker",
                )
            judge = m["judge"].strip() if m["judge"] else None
            count = int(m["count"]) if m["count"] is not None else None
            markers.faults.append(_FaultMarker(raw=inner, judge=judge, kind=kind, count=count))
        else:
            raise _BadRequest(
                f"tracejudge-fake-llm: bad marker [[tj:{inner}]]: expected score=, score:JUDGE=, "
                "latency=, fault=, fault:JUDGE=, levelprobs= or nologprobs",
                outcome="bad_marker",
            )
    return markers


def _parse_action(action: str) -> tuple[str, float | None]:
    """Validate a script action: a fault KIND, ``"ok"`` or ``"ok:SCORE"``."""
    if action == OK or action in FAULT_KINDS:
        return action, None
    if action.startswith(OK + ":"):
        try:
            return OK, float(action[len(OK) + 1 :])
        except ValueError:
            pass
    raise ValueError(
        f"unknown script action {action!r}: use 'ok', 'ok:SCORE' or one of {sorted(FAULT_KINDS)}"
    )


#: MLflow's prompt optimizer asks for improved prompts as JSON (``mlflow.genai.optimize_prompts``).
_META_PROMPT = "You are an expert prompt engineer"
_PROMPT_BLOCK = re.compile(r"Prompt name: (?P<name>\S+)\nTemplate: (?P<template>.*?)(?=\n\n|\Z)", re.S)
#: What the test server adds to a prompt it is asked to improve: plumbing, not a better prompt.
REWRITE_SUFFIX = " Answer precisely, in one short paragraph."


def _prompt_rewrite(messages: list[Any]) -> str | None:
    """A reply to a prompt optimizer's meta-prompt: each named prompt, variables kept, with a sentence added."""
    text = "\n".join(_message_texts(messages))
    if _META_PROMPT not in text:
        return None
    found = {m["name"]: m["template"].rstrip() + REWRITE_SUFFIX for m in _PROMPT_BLOCK.finditer(text)}
    return json.dumps(found) if found else None


def _reply_schema(response_format: Any) -> dict:
    """The JSON schema inside a ``response_format`` of type json_schema, else {}."""
    if isinstance(response_format, dict):
        inner = response_format.get("json_schema")
        if isinstance(inner, dict) and isinstance(inner.get("schema"), dict):
            return inner["schema"]
    return {}


def _chosen_level(plan: _Plan) -> int:
    """The level a reply names: the most likely one of ``levelprobs``, else the one nearest the score."""
    if plan.level_probs:
        return max(range(plan.level_count), key=lambda i: plan.level_probs[i]) + 1  # type: ignore[index]
    return 1 + round(min(1.0, max(0.0, plan.score)) * (plan.level_count - 1))


def _token(text: str, logprob: float, top: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        "token": text,
        "logprob": logprob,
        "bytes": list(text.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
    }


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _format_number(value: float) -> str:
    """``1`` -> ``"1"``, ``0.2`` -> ``"0.2"`` (Retry-After is sent as given)."""
    return str(int(value)) if float(value).is_integer() else str(value)


# ----------------------------------------------------------------------------- server


class FakeLLMServer:
    """An OpenAI-compatible test server on loopback, running in a background thread.

    Use as ``with FakeLLMServer(latency_ms=50) as server: ...`` and point
    ``openai.OpenAI(base_url=server.base_url, api_key="sk-test")`` at it.
    All options are plain attributes and may be changed while it runs.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        latency_ms: float = DEFAULT_LATENCY_MS,
        default_score: float = DEFAULT_SCORE,
        retry_after: float = DEFAULT_RETRY_AFTER,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
        reject_response_format: bool = False,
        reject_schema_bounds: bool = False,
        logprobs: bool = True,
        rate_limit_per_second: float | None = None,
        rate_limit_burst: int | None = None,
    ) -> None:
        self.host = host
        #: Like a provider's limit: a chat request beyond this rate (with ``rate_limit_burst`` in hand,
        #: default one second's worth) gets 429 with Retry-After = the time until it would be allowed.
        self.rate_limit_per_second = rate_limit_per_second
        self.rate_limit_burst = rate_limit_burst
        self._rate_tat = 0.0  # GCRA theoretical arrival time (monotonic seconds)
        self.latency_ms = latency_ms
        self.default_score = default_score
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.reject_response_format = reject_response_format
        #: Like strict providers that refuse ``minimum``/``maximum`` in a JSON schema (400).
        self.reject_schema_bounds = reject_schema_bounds
        #: Whether ``logprobs: true`` requests get token logprobs (False: like an endpoint without them).
        self.logprobs = logprobs
        self._requested_port = port
        self._bound_port: int | None = None

        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._script: collections.deque[str] = collections.deque()
        self._fault_counts: dict[tuple[str | None, str, str], int] = {}
        self._chat_requests = 0
        self._in_flight = 0
        self._max_concurrent = 0
        self._by_outcome: collections.Counter[str] = collections.Counter()
        self._prompt_tokens = 0
        self._completion_tokens = 0

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._conn_tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FakeLLMServer:
        """Start the server thread, wait until it listens, and return self."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run_loop, name="tracejudge-fake-llm", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError("tracejudge-fake-llm did not start listening in time")
        if self._startup_error is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Stop the server: close connections, wake hung requests. Idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop_event.set)
            except RuntimeError:  # loop closed in between
                pass
        thread.join(STOP_TIMEOUT_SECONDS)
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port actually listened on (the requested one before start)."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (a wildcard host is given as loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` for ``openai.OpenAI``."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------------ test controls

    def script(self, *actions: str) -> None:
        """Queue actions (a fault KIND, ``"ok"`` or ``"ok:0.3"``) for the next chat requests.

        Each chat request pops one action; a popped action wins over prompt markers.
        """
        for action in actions:
            _parse_action(action)
        with self._lock:
            self._script.extend(actions)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the list of recorded requests (all paths), oldest first."""
        with self._lock:
            return list(self._records)

    def stats(self) -> dict[str, Any]:
        """Counters over chat requests: requests, max_concurrent, in_flight, by_outcome, tokens."""
        with self._lock:
            return {
                "requests": self._chat_requests,
                "max_concurrent": self._max_concurrent,
                "in_flight": self._in_flight,
                "by_outcome": dict(self._by_outcome),
                "prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
            }

    def reset(self) -> None:
        """Clear records, counters, the script queue and fault counters."""
        with self._lock:
            self._records.clear()
            self._script.clear()
            self._fault_counts.clear()
            self._chat_requests = 0
            self._max_concurrent = self._in_flight
            self._by_outcome.clear()
            self._prompt_tokens = 0
            self._completion_tokens = 0

    def prompts_for(self, judge: str | None = None) -> list[list[dict[str, Any]]]:
        """The ``messages`` lists of recorded chat requests; only ``judge``'s when given."""
        with self._lock:
            records = list(self._records)
        return [
            r.body["messages"]
            for r in records
            if r.path in CHAT_PATHS
            and isinstance(r.body, dict)
            and isinstance(r.body.get("messages"), list)
            and (judge is None or r.judge == judge)
        ]

    # ------------------------------------------------------------------ event loop

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._handle_connection, self.host, self._requested_port, backlog=LISTEN_BACKLOG
            )
        except BaseException as exc:  # e.g. port in use: re-raised by start()
            self._startup_error = exc
            self._ready.set()
            return
        self._bound_port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            tasks = list(self._conn_tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            while await self._handle_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conn_tasks.discard(task)
            if self._stop_event is not None and self._stop_event.is_set():
                writer.transport.abort()  # shutting down: don't wait for slow readers
            else:
                writer.close()  # flushes a pending "Connection: close" response first

    async def _handle_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return True to keep the connection open for the next one."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # client closed the connection
        except asyncio.LimitOverrunError:
            await self._send_json(writer, 431, _error_body(
                "tracejudge-fake-llm: request headers too large", "invalid_request_error"), keep_alive=False)
            return False

        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._send_json(writer, 400, _error_body(
                "tracejudge-fake-llm: malformed request line", "invalid_request_error"), keep_alive=False)
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        connection = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and connection != "close") or connection == "keep-alive"

        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._send_json(writer, 411, _error_body(
                "tracejudge-fake-llm: chunked request bodies are not supported; send Content-Length",
                "invalid_request_error"), keep_alive=False)
            return False
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            await self._send_json(writer, 400, _error_body(
                "tracejudge-fake-llm: bad Content-Length", "invalid_request_error"), keep_alive=False)
            return False
        raw_body = await reader.readexactly(length) if length else b""

        record = self._record(method, path, headers, raw_body)
        if method == "POST" and path in CHAT_PATHS:
            return await self._handle_chat(record, writer, keep_alive)
        if method == "GET" and path in MODELS_PATHS:
            payload: dict[str, Any] = {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": OWNER}],
            }
            status, outcome = 200, OK
        elif method == "GET" and path == HEALTH_PATH:
            payload, status, outcome = {"status": "ok"}, 200, OK
        else:
            payload = _error_body(
                f"Unknown request URL: {method} {path} (tracejudge-fake-llm)",
                "invalid_request_error", "unknown_url")
            status, outcome = 404, "not_found"
        await self._send_json(writer, status, payload, keep_alive=keep_alive,
                              on_send=lambda: self._finish(record, status, outcome))
        return keep_alive

    # ------------------------------------------------------------------ chat completions

    def _over_rate_limit(self) -> float | None:
        """None when a request may go now (and count it), else the seconds until one may (GCRA)."""
        rate = self.rate_limit_per_second
        if not rate:
            return None
        interval = 1.0 / rate
        burst = self.rate_limit_burst or max(1, int(rate))
        with self._lock:
            now = time.monotonic()
            tat = max(self._rate_tat, now)
            allow_at = tat - (burst - 1) * interval
            if now < allow_at:
                return allow_at - now
            self._rate_tat = tat + interval
            return None

    async def _handle_chat(
        self, record: RecordedRequest, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> bool:
        with self._lock:
            self._chat_requests += 1
            self._in_flight += 1
            self._max_concurrent = max(self._max_concurrent, self._in_flight)
        outcome = "error"
        try:
            wait = self._over_rate_limit()
            if wait is not None:
                outcome = "rate_limited"
                self._count_outcome(record, outcome)
                status, type_, code, message = _ERROR_FAULTS["429"]
                await self._send_json(
                    writer, status, _error_body(f"{message} (server rate limit)", type_, code), keep_alive=keep_alive,
                    extra_headers={"Retry-After": _format_number(round(max(wait, 0.01), 3))},
                    on_send=lambda: self._complete_chat(record, status, outcome))
                return keep_alive
            try:
                plan, messages = self._plan(record)
            except _BadRequest as bad:
                outcome = bad.outcome
                self._count_outcome(record, outcome)
                await self._send_json(
                    writer, 400, _error_body(bad.message, "invalid_request_error", None, bad.param),
                    keep_alive=keep_alive, on_send=lambda: self._complete_chat(record, 400, outcome))
                return keep_alive
            outcome = plan.outcome
            self._count_outcome(record, outcome)

            latency = max(0.0, float(self.latency_ms or 0)) + plan.latency_ms
            if latency > 0:
                await asyncio.sleep(latency / 1000)

            if outcome == "drop":
                self._complete_chat(record, None, outcome)
                writer.transport.abort()
                return False
            if outcome == "hang":
                assert self._stop_event is not None
                try:
                    await asyncio.wait_for(self._stop_event.wait(), float(self.hang_seconds))
                except asyncio.TimeoutError:
                    pass
                return False  # the connection is closed without a reply
            if outcome in _ERROR_FAULTS:
                status, type_, code, message = _ERROR_FAULTS[outcome]
                extra = {"Retry-After": _format_number(self.retry_after)} if outcome == "429" else None
                await self._send_json(
                    writer, status, _error_body(message, type_, code), keep_alive=keep_alive,
                    extra_headers=extra, on_send=lambda: self._complete_chat(record, status, outcome))
                return keep_alive

            content = _prompt_rewrite(messages) or self._content(plan)
            prompt_tokens = max(1, sum(len(t) for t in _message_texts(messages)) // 4)
            completion_tokens = max(1, len(content) // 4)
            reply = self._completion(content, prompt_tokens, completion_tokens)
            logprobs = self._logprobs(content, plan)
            if logprobs is not None:
                reply["choices"][0]["logprobs"] = logprobs
            await self._send_json(
                writer, 200, reply,
                keep_alive=keep_alive,
                on_send=lambda: self._complete_chat(record, 200, outcome, prompt_tokens, completion_tokens))
            return keep_alive
        finally:
            self._complete_chat(record, None, outcome)  # no-op unless dropped, hung or failed

    def _plan(self, record: RecordedRequest) -> tuple[_Plan, list]:
        """Decide how to answer a chat request (script > markers > defaults)."""
        body = record.body
        if not isinstance(body, dict):
            raise _BadRequest(
                "We could not parse the JSON body of your request. (tracejudge-fake-llm)",
                outcome="bad_json")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest("tracejudge-fake-llm: 'messages' must be a list", param="messages")
        if body.get("stream"):
            raise _BadRequest("tracejudge-fake-llm: streaming is not supported", param="stream")
        if self.reject_response_format and "response_format" in body:
            raise _BadRequest(REJECT_RESPONSE_FORMAT_MESSAGE, param="response_format",
                              outcome="response_format_rejected")
        schema = _reply_schema(body.get("response_format"))
        if self.reject_schema_bounds and any(
            key in prop for prop in schema.get("properties", {}).values() if isinstance(prop, dict)
            for key in ("minimum", "maximum")
        ):
            raise _BadRequest(REJECT_SCHEMA_BOUNDS_MESSAGE, param="response_format", outcome="schema_bounds_rejected")

        texts = _message_texts(messages)
        markers = _parse_markers("\n".join(texts))
        judge = record.judge

        score, reason = self.default_score, "default score"
        if judge is not None and judge in markers.judge_scores:
            score, reason = markers.judge_scores[judge], f"score marker for judge {judge}"
        elif markers.score is not None:
            score, reason = markers.score, "score marker"

        with self._lock:
            action = self._script.popleft() if self._script else None
        if action is not None:
            kind, scripted_score = _parse_action(action)
            if scripted_score is not None:
                score, reason = scripted_score, "scripted score"
            return self._with_levels(_Plan(kind, score, reason, markers.latency_ms), body, schema, texts, markers), messages

        kind = self._fault_from_markers(markers, judge, texts)
        return self._with_levels(_Plan(kind, score, reason, markers.latency_ms), body, schema, texts, markers), messages

    def _with_levels(self, plan: _Plan, body: dict, schema: dict, texts: list[str], markers: _Markers) -> _Plan:
        """The logprobs mode: a reply schema with ``level`` (or a prompt asking for one) -> a level reply."""
        level = schema.get("properties", {}).get("level") if schema else None
        if isinstance(level, dict) and isinstance(level.get("enum"), list) and level["enum"]:
            plan.level_count = len(level["enum"])
        elif '"level": <level number 1 to ' in "\n".join(texts):
            found = re.search(r'"level": <level number 1 to (\d+)>', "\n".join(texts))
            plan.level_count = int(found.group(1)) if found else 5
        if plan.level_count:
            if markers.level_probs is not None:
                plan.level_probs = (markers.level_probs + [0.0] * plan.level_count)[: plan.level_count]
            plan.logprobs = bool(body.get("logprobs")) and self.logprobs and not markers.no_logprobs
        return plan

    def _fault_from_markers(self, markers: _Markers, judge: str | None, texts: list[str]) -> str:
        """The first applicable fault marker (judge-specific ones first), else "ok"."""
        candidates = [f for f in markers.faults if f.judge is not None and f.judge == judge]
        candidates += [f for f in markers.faults if f.judge is None]
        text_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()
        for fault in candidates:
            if fault.count is None:
                return fault.kind
            key = (judge, fault.raw, text_hash)
            with self._lock:
                seen = self._fault_counts.get(key, 0)
                if seen < fault.count:
                    self._fault_counts[key] = seen + 1
                    return fault.kind
        return OK

    def _content(self, plan: _Plan) -> str:
        if plan.level_count:
            default = json.dumps({"rationale": f"{MODEL_ID}: {plan.reason}", "level": _chosen_level(plan)})
            out_of_range = json.dumps({"rationale": f"{MODEL_ID}: scripted out-of-range level", "level": plan.level_count + 1})
            missing = json.dumps({"rationale": "no level here"})
        else:
            default = json.dumps({"rationale": f"{MODEL_ID}: {plan.reason}", "score": plan.score})
            out_of_range = json.dumps({"rationale": f"{MODEL_ID}: scripted out-of-range score", "score": 1.7})
            missing = json.dumps({"rationale": "no score here"})
        return {
            "malformed": "this is not json {",
            "missing_field": missing,
            "out_of_range": out_of_range,
            "empty": "",
            "fenced": f"```json\n{default}\n```",
        }.get(plan.outcome, default)

    @staticmethod
    def _logprobs(content: str, plan: _Plan) -> dict[str, Any] | None:
        """Token logprobs of ``content`` in the OpenAI form; the level digit carries the distribution."""
        if not plan.logprobs:
            return None
        match = re.search(r'"level":\s*(\d+)', content)
        if match is None:
            return {"content": [_token(content, 0.0, [])]}
        start, end = match.span(1)
        probs = plan.level_probs or [1.0 if i + 1 == _chosen_level(plan) else 0.0 for i in range(plan.level_count)]
        total = sum(probs)
        top = [
            (str(i + 1), math.log(p / total)) for i, p in sorted(enumerate(probs), key=lambda x: -x[1]) if p > 0
        ][:20]
        chosen = dict(top).get(content[start:end], -50.0)
        return {
            "content": [
                _token(content[:start], 0.0, []),
                _token(content[start:end], chosen, top),
                _token(content[end:], 0.0, []),
            ]
        }

    @staticmethod
    def _completion(content: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{MODEL_ID}-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL_ID,
            "system_fingerprint": MODEL_ID,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    # ------------------------------------------------------------------ recording / io

    def _record(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> RecordedRequest:
        body: dict[str, Any] | None = None
        if raw_body:
            try:
                parsed = json.loads(raw_body)
                body = parsed if isinstance(parsed, dict) else None
            except (ValueError, UnicodeDecodeError):
                body = None
        safe_headers = {k: (REDACTED if k in SECRET_HEADERS else v) for k, v in headers.items()}
        record = RecordedRequest(
            path=path,
            method=method,
            body=body,
            judge=headers.get(JUDGE_HEADER) or None,
            headers=safe_headers,
            started_at=time.time(),
            authorization_sha256=(
                hashlib.sha256(headers["authorization"].encode()).hexdigest() if "authorization" in headers else None
            ),
        )
        with self._lock:
            self._records.append(record)
        return record

    def _finish(self, record: RecordedRequest, status: int | None, outcome: str) -> None:
        with self._lock:
            record.status, record.outcome, record.finished_at = status, outcome, time.time()

    def _complete_chat(
        self, record: RecordedRequest, status: int | None, outcome: str,
        prompt_tokens: int = 0, completion_tokens: int = 0,
    ) -> None:
        """Finish a chat request exactly once: its record, in_flight and token sums."""
        with self._lock:
            if record.finished_at is not None:
                return
            record.status, record.outcome, record.finished_at = status, outcome, time.time()
            self._in_flight -= 1
            self._prompt_tokens += prompt_tokens
            self._completion_tokens += completion_tokens

    def _count_outcome(self, record: RecordedRequest, outcome: str) -> None:
        with self._lock:
            record.outcome = outcome
            self._by_outcome[outcome] += 1

    @staticmethod
    async def _send_json(
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        *,
        keep_alive: bool,
        extra_headers: dict[str, str] | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> None:
        """Write a JSON response; ``on_send`` runs just before the bytes go out, so a
        client that has seen the response also sees the request's final record."""
        body = json.dumps(payload).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            f"X-Request-Id: req_{uuid.uuid4().hex[:24]}",
            f"Server: {MODEL_ID}",
        ]
        head += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
        if on_send is not None:
            on_send()
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


# ----------------------------------------------------------------------------- CLI


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def build_parser() -> argparse.ArgumentParser:
    """The options of ``tracejudge fake-llm`` (also read by the CLI reference)."""
    parser = argparse.ArgumentParser(
        prog="tracejudge-fake-llm",
        description="Local OpenAI-compatible TEST server for tracejudge (not a real model).",
        epilog=(
            "Point the judges at it with TRACEJUDGE_LLM_BASE_URL=http://HOST:PORT/v1 (no API key needed on loopback). "
            "Steer a reply from the judged text with markers: [[tj:score=0.42]], [[tj:score:relevance=0.3]], "
            "[[tj:latency=500]], [[tj:fault=503x2]], [[tj:fault:relevance=429]]; fault kinds: "
            + ", ".join(sorted(FAULT_KINDS)) + "."
        ),
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_CLI_PORT, help=f"port (default {DEFAULT_CLI_PORT})")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS, help=f"delay before each reply, ms (default {DEFAULT_LATENCY_MS:g})")
    parser.add_argument("--default-score", type=float, default=DEFAULT_SCORE, help=f"score of a reply without a score marker (default {DEFAULT_SCORE:g})")
    parser.add_argument("--retry-after", type=_number, default=DEFAULT_RETRY_AFTER, help="Retry-After header of a 429 fault, seconds")
    parser.add_argument("--hang-seconds", type=float, default=DEFAULT_HANG_SECONDS, help="how long a 'hang' fault hangs, seconds")
    parser.add_argument("--reject-response-format", action="store_true", help="answer 400 to a strict JSON-schema response_format (like some providers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the test server in the foreground until SIGINT/SIGTERM; return 0."""
    args = build_parser().parse_args(argv)

    server = FakeLLMServer(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        default_score=args.default_score,
        retry_after=args.retry_after,
        hang_seconds=args.hang_seconds,
        reject_response_format=args.reject_response_format,
    )
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        print(f"{MODEL_ID} (a test server, not a real model) listening on {server.base_url}", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
