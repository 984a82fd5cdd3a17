"""The test LLM server for the benchmarks, in a process of its own.

It is ``tracejudge.testing.FakeLLMServer`` at a fixed latency (200 ms by
default), with one addition: each reply carries ``"result"`` next to
``"score"``, because MLflow's ``make_judge`` (the peer) reads
``response["result"]`` while our judges read ``score`` (extra keys are
ignored by both). It runs in its own process so that its event loop does not
share a GIL with the process being measured; the parent reads its counters
over a pipe.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from typing import Any


def _serve(conn: Any, latency_ms: float) -> None:
    from tracejudge.testing.fake_llm import FakeLLMServer

    class BenchLLMServer(FakeLLMServer):
        def _content(self, plan: Any) -> str:  # type: ignore[override]
            content = super()._content(plan)
            if plan.outcome != "ok":
                return content
            data = json.loads(content)
            data["result"] = data["score"]  # for make_judge(feedback_value_type=float)
            return json.dumps(data)

    server = BenchLLMServer(latency_ms=latency_ms).start()
    conn.send({"base_url": server.base_url, "port": server.port})
    while True:
        try:
            command = conn.recv()
        except EOFError:
            break
        if command == "stats":
            conn.send(server.stats())
        elif command == "reset":
            server.reset()
            conn.send(True)
        elif command == "stop":
            break
    server.stop()
    conn.send(True)


class LLMProcess:
    """``with LLMProcess(latency_ms=200) as llm: llm.base_url, llm.stats()``."""

    def __init__(self, latency_ms: float = 200.0) -> None:
        self.latency_ms = latency_ms
        self.base_url = ""
        self.pid: int | None = None
        self._proc: Any = None
        self._conn: Any = None

    def start(self) -> "LLMProcess":
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.latency_ms), name="bench-llm", daemon=True)
        self._proc.start()
        self.pid = self._proc.pid
        if not parent.poll(60):
            raise RuntimeError("the test LLM server did not start within 60 s")
        info = parent.recv()
        self.base_url = info["base_url"]
        self._conn = parent
        return self

    def stats(self) -> dict[str, Any]:
        self._conn.send("stats")
        return self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send("stop")
            if self._conn.poll(10):
                self._conn.recv()
        except (OSError, EOFError):
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = None

    def __enter__(self) -> "LLMProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
