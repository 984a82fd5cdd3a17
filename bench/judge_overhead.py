#!/usr/bin/env python
"""Where the judges step's time over the LLM's latency goes on an idle worker (6 judge calls at once).

    .venv/bin/python bench/judge_overhead.py [--rounds 20] [--latency-ms 200]

Starts the bench's test LLM (its own process, as in ``run.py``), a private redis-server and a sqlite
store with one demo trace, then times the same 6 concurrent calls through ever more of the stack, each
round ``--pause`` s after the last (an idle worker), and prints p50 / p95 of (wall - LLM latency) in ms:

* ``sleep``: 6 ``asyncio.sleep(latency)`` on the worker's loop, from another thread (``Runtime.run``'s hand-off);
* ``raw``: 6 POSTs of that body written by hand on 6 kept-alive asyncio connections (the test server and loopback);
* ``httpx``: 6 POSTs of the body our client sends, through the ``openai`` package's own httpx client;
* ``openai``: 6 ``AsyncOpenAI.chat.completions.create`` (request building, response parsing);
* ``llmclient``: 6 ``LLMClient.score`` (tenacity, reply parsing), no rate limiter;
* ``judges``: ``Runtime.run(run_judges(...))`` on the demo trace's 6 jobs, exactly as the worker's
  judges step (prompt rendering, rate-limiter cool-down check in Redis, results);
* ``judges_warm``: the same but rounds back to back (no idle pause: the vCPU and the cool-down check are warm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

CALLS = 6


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--pause", type=float, default=0.3, help="idle time before each round (s), as run.py's row 6")
    args = p.parse_args(argv)
    latency = args.latency_ms / 1000
    rows: dict[str, list[float]] = {}
    with ExitStack() as stack:
        services = h.start_services(stack, latency_ms=args.latency_ms, base=Path(tempfile.mkdtemp(prefix="tracejudge-judgeoh-")))
        store = h.sqlite_store(services)
        trace_id = h.make_traces(store, 1, "judged")[0]
        os.environ.update(services.worker_env(store, "judgeoh:"))

        from tracejudge.config import Settings, load_config
        from tracejudge.judges.runner import run_judges
        from tracejudge.tasks.evaluate import plan_jobs, runtime_plan
        from tracejudge.payload import EvaluationRequest
        from tracejudge.tasks.runtime import Runtime

        settings = Settings.from_env()
        config = load_config(settings.config_path)
        runtime = Runtime(settings=settings, config=config)
        stack.callback(runtime.close)
        loaded = runtime.store.load_trace(trace_id)
        request = EvaluationRequest(trace_id=trace_id)
        jobs, _ = plan_jobs(loaded, runtime_plan(config, runtime, request), runtime, request)
        assert len(jobs) == CALLS, len(jobs)
        execution = config.judges.execution
        messages = [{"role": "user", "content": "Rate this answer. " * 40}]
        body_bytes = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
        openai_client = runtime.llm._openai
        http = openai_client._client

        async def sleeps() -> None:
            await asyncio.gather(*(asyncio.sleep(latency) for _ in range(CALLS)))

        conns: list[Any] = []

        async def raw_posts() -> None:
            from urllib.parse import urlsplit

            url = urlsplit(services.llm.base_url)
            if not conns:
                for _ in range(CALLS):
                    conns.append(await asyncio.open_connection(url.hostname, url.port))
            head = (f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer sk-x\r\nContent-Length: {len(body_bytes)}\r\n\r\n").encode()

            async def one(reader: Any, writer: Any) -> None:
                writer.write(head + body_bytes)
                await writer.drain()
                lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
                length = int(next(x for x in lines if x.lower().startswith("content-length")).split(":")[1])
                json.loads(await reader.readexactly(length))

            await asyncio.gather(*(one(r, w) for r, w in conns))

        async def httpx_posts() -> None:
            async def one() -> None:
                response = await http.post(f"{services.llm.base_url}/chat/completions", content=body_bytes,
                                           headers={"content-type": "application/json", "authorization": "Bearer sk-x"})
                response.json()

            await asyncio.gather(*(one() for _ in range(CALLS)))

        async def openai_calls() -> None:
            await asyncio.gather(*(openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                                   for _ in range(CALLS)))

        async def llmclient_calls() -> None:
            await asyncio.gather(*(runtime.llm.score(model="gpt-4o-mini", messages=messages, judge=f"j{i}")
                                   for i in range(CALLS)))

        def judges() -> Any:
            return run_judges(jobs, client=runtime.llm, execution=execution, default_model=settings.default_model,
                              deadline=time.monotonic() + 60, limiter=runtime.limiter(execution.rate_limit_per_second),
                              controls=runtime.controls(config))

        cases = [("sleep", sleeps, args.pause), ("raw", raw_posts, args.pause), ("httpx", httpx_posts, args.pause), ("openai", openai_calls, args.pause),
                 ("llmclient", llmclient_calls, args.pause), ("judges", judges, args.pause), ("judges_warm", judges, 0.0)]
        for _, make, _ in cases:  # warm every path once (connections, imports)
            runtime.run(make())
        for i in range(args.rounds):  # interleaved, so a noisy moment hits every case alike
            for name, make, pause in cases:
                time.sleep(pause)
                started = time.perf_counter()
                runtime.run(make())
                rows.setdefault(name, []).append(time.perf_counter() - started - latency)
    print(f"\n{CALLS} concurrent calls, LLM at {args.latency_ms:g} ms, {args.rounds} rounds, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| path | overhead p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        ms = [v * 1000 for v in values]
        print(f"| {name} | {pct(ms, 50):.1f} | {pct(ms, 95):.1f} | {statistics.mean(ms):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
