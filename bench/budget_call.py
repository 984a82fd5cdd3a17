#!/usr/bin/env python
"""What the budget adds to one judge call: CallControls.call with and without a RedisBudget.

    .venv/bin/python bench/budget_call.py [--calls 2000] [--concurrency 16]

Starts a private redis-server and runs ``--calls`` calls through ``CallControls.call`` whose LLM call is an
``asyncio.sleep(0)`` (no network: only the controls' own cost shows), ``--concurrency`` at a time, on one
event loop, three ways:

* ``none``: no budget (the baseline);
* ``budget``: a RedisBudget (reserve and settle, one Lua call each, the lease extender task, the call meter);
* ``budget_long``: the same with the LLM call waiting 50 ms, so several lease extensions are scheduled and cancelled.

Prints per-call wall time (µs, mean over the run) and the process CPU per call, with the load average before
and after: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tracejudge.judges.client import LLMReply  # noqa: E402
from tracejudge.judges.controls import CallControls  # noqa: E402
from tracejudge.judges.model import JudgeReply, TokenUsage  # noqa: E402
from tracejudge.judges.pricing import PriceTable  # noqa: E402

MESSAGES = [{"role": "user", "content": "answer: " + "words " * 200}]


async def run(controls: CallControls, calls: int, concurrency: int, wait: float) -> tuple[float, float]:
    reply = LLMReply(reply=JudgeReply(score=0.9, rationale="ok"), tokens=TokenUsage(prompt=300, completion=40), attempts=1, model="gpt-4o-mini")

    async def invoke() -> LLMReply:
        await asyncio.sleep(wait)
        return reply

    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await controls.call(judge="coherence", version="v1", model="gpt-4o-mini", messages=MESSAGES, parameters={},
                                values={"output": str(i)}, invoke=invoke)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    import redis.asyncio

    from tracejudge.controls.budget import RedisBudget
    from tracejudge.testing.processes import RedisServer

    print(f"load average before: {os.getloadavg()}")
    with RedisServer() as server:
        async def scenario() -> None:
            client = redis.asyncio.Redis.from_url(server.url)
            budget = RedisBudget(client, daily_usd=1e6, prefix="bench:", lease_seconds=120)
            for name, controls, wait in (
                ("none", CallControls(prices=PriceTable()), 0.0),
                ("budget", CallControls(prices=PriceTable(), budget=budget), 0.0),
                ("budget_long", CallControls(prices=PriceTable(), budget=RedisBudget(client, daily_usd=1e6, prefix="bench:", lease_seconds=0.06)), 0.05),
            ):
                await run(controls, min(200, args.calls), args.concurrency, wait)  # warm up
                wall, cpu = await run(controls, args.calls, args.concurrency, wait)
                print(f"{name:12s} wall {wall:8.1f} us/call   cpu {cpu:8.1f} us/call   ({args.calls} calls, {args.concurrency} at once)")
            await client.aclose()

        asyncio.run(scenario())
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
