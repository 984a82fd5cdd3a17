"""Sample a worker with py-spy under load and say where its CPU goes.

``start_py_spy(pid, out, seconds=20)`` runs ``py-spy record --format raw``
(collapsed stacks; only threads on a CPU are sampled, not those waiting on
sockets or locks) over the worker and its pool children.
``summarize(out)`` sorts the samples two ways:

* **step**: which step of an evaluation the stack belongs to, from the
  tracejudge/Celery functions on it (get_trace, judges, write_feedback,
  write_summary, redis lock/cache, Celery's consumer and result store, ...);
* **library**: the innermost library frame (sqlalchemy, mlflow, openai/httpx,
  celery/kombu, redis-py, pydantic, tracejudge, ...), i.e. whose code burns it.

``python bench/profile_worker.py OUT.txt`` prints both for a saved profile.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

STEPS = [
    ("write-back: feedback", ("write_results", "log_result", "log_feedback")),
    ("write-back: tags, report, metrics", ("write_summary", "set_trace_tags", "set_trace_tag", "write_report", "log_dict",
                                           "log_batch", "summary_calls", "online_run_id", "link_trace")),
    ("get_trace", ("wait_for_trace", "load_trace", "fetch_trace", "get_trace")),
    ("judges (LLM client, prompts, parsing)", ("run_judges", "run_one", "score", "LLMClient", "render")),
    ("redis lock/cache", ("trace_lock", "cached_results", "cache_results", "_renew_lock")),
    ("verdict/report", ("build_verdict", "quality_report", "quality_metrics", "verdict_json")),
    ("plan", ("plan_jobs", "plan_for_target")),
    ("celery: store result / events", ("store_result", "mark_as_done", "_store_result", "send_event", "on_success")),
    ("celery: consume / dispatch", ("drain_events", "on_task_received", "consume", "_brpop", "on_readable", "asynloop",
                                    "synloop", "Consumer", "execute_using_pool", "apply_async", "_process_task")),
]

LIBRARIES = [
    ("sqlalchemy", ("sqlalchemy/",)),
    ("sqlite3 (C)", ("sqlite3/",)),
    ("requests/urllib3 (MLflow HTTP client)", ("requests/", "urllib3/")),
    ("mlflow", ("mlflow/",)),
    ("openai/httpx", ("openai/", "httpx", "httpcore", "h11/", "anyio/")),
    ("celery/kombu/billiard", ("celery/", "kombu/", "billiard/", "vine/")),
    ("redis-py", ("redis/",)),
    ("pydantic", ("pydantic",)),
    ("tenacity", ("tenacity/",)),
    ("tracejudge", ("tracejudge/",)),
    ("asyncio", ("asyncio/",)),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("socket I/O (socket, selectors, ssl modules)", ("ssl.py", "socket.py", "selectors.py")),
    ("threading/concurrent", ("threading.py", "concurrent/", "queue.py")),
]


def start_py_spy(pid: int, out: Path, *, seconds: float, rate: int = 50) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", str(rate),
         "--duration", str(int(seconds)), "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def _step(frames: list[str]) -> str:
    text = ";".join(frames)
    for name, needles in STEPS:
        if any(f"{n} (" in text for n in needles):
            return name
    if "tracejudge/" in text:
        return "other tracejudge"
    if "celery/" in text or "kombu/" in text:
        return "celery: other"
    return "other"


def _library(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in LIBRARIES:
            if any(n in frame for n in needles):
                return name
    return "other (interpreter, C)"


def summarize(path: Path) -> dict[str, Any]:
    steps: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "steps": {}, "libraries": {}}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        steps[_step(frames)] += n
        libraries[_library(frames)] += n
        total += n
    share = lambda c: {k: round(v / total * 100, 1) for k, v in c.most_common()}  # noqa: E731
    return {"samples": total, "steps": share(steps), "libraries": share(libraries)}


if __name__ == "__main__":
    import json

    print(json.dumps(summarize(Path(sys.argv[1])), indent=2))
