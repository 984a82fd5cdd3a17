"""Test helpers for tracejudge: a local OpenAI-compatible *test* server.

:class:`FakeLLMServer` listens on loopback over real HTTP and answers
``/v1/chat/completions`` like an OpenAI endpoint, but always as
``"model": "tracejudge-fake-llm"`` (it never pretends to be a real model).
Prompts steer it with markers such as ``[[tj:score=0.42]]``,
``[[tj:score:relevance=0.3]]``, ``[[tj:latency=500]]`` or ``[[tj:fault=503x2]]``;
tests can also queue replies with :meth:`FakeLLMServer.script`.

Example::

    import openai
    from tracejudge.testing import FakeLLMServer

    with FakeLLMServer(latency_ms=20) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        server.script("429", "ok:0.3")  # first call: rate limited, second: score 0.3
        reply = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "rate this [[tj:score=0.9]]"}]
        )
        ...
        assert server.stats()["requests"] >= 1
        assert server.requests[0].headers["authorization"] == "<redacted>"

Stand-alone: ``python -m tracejudge.testing.fake_llm --port 8089``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FakeLLMServer", "RecordedRequest"]

if TYPE_CHECKING:
    from tracejudge.testing.fake_llm import FakeLLMServer, RecordedRequest


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m tracejudge.testing.fake_llm` does not import the
    # module twice (runpy warns when a package pre-imports the module it runs).
    if name in __all__:
        from tracejudge.testing import fake_llm

        return getattr(fake_llm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
