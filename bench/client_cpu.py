#!/usr/bin/env python
"""CPU per judge call in ``LLMClient.score``: the test LLM in its own process, 16 calls in flight.

    flock /tmp/tracejudge-bench.lock .venv/bin/python bench/client_cpu.py [--calls 800] [--rounds 3]

Prints the calling process's CPU time per call (``time.process_time``), each round
after two warm-up rounds of 16 calls. To compare with another tree's client, run it
again with ``PYTHONPATH=/path/to/other/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from typing import Any

MESSAGES = [
    {"role": "system", "content": "You are a judge. " * 20},
    {"role": "user", "content": "Judge this: " + "lorem ipsum " * 200},
]


def _serve(conn: Any, latency_ms: float) -> None:
    from tracejudge.testing.fake_llm import FakeLLMServer

    server = FakeLLMServer(latency_ms=latency_ms).start()
    conn.send(server.base_url)
    conn.recv()


async def _round(base_url: str, calls: int, in_flight: int) -> float:
    from tracejudge.judges.client import LLMClient

    client = LLMClient(base_url=base_url, api_key="sk-bench-not-a-real-key")
    slots = asyncio.Semaphore(in_flight)

    async def one() -> Any:
        async with slots:
            return await client.score(model="gpt-4o-mini", messages=MESSAGES, judge="relevance")

    try:
        for _ in range(2):
            await asyncio.gather(*(one() for _ in range(in_flight)))
        started = time.process_time()
        replies = await asyncio.gather(*(one() for _ in range(calls)))
        cpu = time.process_time() - started
    finally:
        await client.aclose()
    assert all(0.0 <= r.reply.score <= 1.0 for r in replies)
    return cpu / calls * 1000.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=800)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--latency-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    ours, theirs = mp.Pipe()
    server = mp.Process(target=_serve, args=(theirs, args.latency_ms), daemon=True)
    server.start()
    base_url = ours.recv()
    try:
        for i in range(args.rounds):
            ms = asyncio.run(_round(base_url, args.calls, args.in_flight))
            print(f"round {i + 1}: {args.calls} calls, {ms:.3f} ms CPU per call", flush=True)
    finally:
        ours.send("stop")
        server.join(2)
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
