"""Judge traces already in MLflow: page through ``search_traces`` and enqueue each trace.

``tracejudge backfill --experiment-id 1 --since 7d`` (see :func:`run_backfill`):

* skips traces already judged with the current plan (the fingerprint in our
  feedbacks' metadata, or the ``tracejudge.plan`` tag: see
  :mod:`~tracejudge.controls.judged`), unless ``force`` (then the new
  assessments supersede the old ones);
* applies sampling (``sample`` or ``judges.sampling.rate``) and the filters;
* holds back while the background queue is deeper than ``max_queue``, so it
  never queues more than the workers (and the rate limit) can absorb;
* saves a checkpoint in Redis after every page, so ``resume`` continues an
  interrupted run where it stopped;
* ``dry_run`` only counts; ``wait`` waits for the verdicts.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from tracejudge.config import TraceJudgeConfig
from tracejudge.config.settings import redact_url

CHECKPOINT = "backfill:"
CHECKPOINT_TTL_SECONDS = 30 * 24 * 3600
DEFAULT_MAX_QUEUE = 1000
PROBE_TIMEOUT_SECONDS = 1.5
#: a local or database store (sqlite, file, postgresql...) is opened in-process: its first open creates
#: the engine and checks the schema, seconds on a busy machine, so it gets longer than a server's probe.
LOCAL_STORE_TIMEOUT_SECONDS = 60.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BackfillError(RuntimeError):
    """The backfill cannot start (MLflow unreachable, unknown experiment, bad filter, bad dates)."""


@dataclass
class BackfillCounts:
    """What a backfill did (kept in the checkpoint)."""

    seen: int = 0
    enqueued: int = 0
    skipped_judged: int = 0
    skipped_filter: int = 0
    skipped_sampling: int = 0
    unfinished: int = 0
    #: Traces to judge again because some of their results are transient failures (only those are re-judged)...
    transient: int = 0
    #: ... of which automatic retries were used up (``controls.retries``).
    retries_exhausted: int = 0


def _count_transient(info: Any, counts: BackfillCounts) -> bool:
    """Count an enqueued trace that has transient failures (only those results are judged again)."""
    from tracejudge.controls.judged import transient_failures
    from tracejudge.controls.retries import MAX_FAILED_EVALUATIONS, failed_evaluations

    assessments = getattr(info, "assessments", None) or []
    if not transient_failures(assessments):
        return False
    counts.transient += 1
    if failed_evaluations(assessments) >= MAX_FAILED_EVALUATIONS:
        counts.retries_exhausted += 1
    return True


@dataclass
class BackfillResult:
    counts: BackfillCounts
    sample_ids: list[str] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    resumed: bool = False
    checkpoint: str = ""

    @property
    def rate(self) -> float:
        """Traces enqueued per second."""
        return self.counts.enqueued / self.seconds if self.seconds > 0 else 0.0


def parse_time(text: str | None, *, now: float | None = None, what: str = "--since") -> int | None:
    """Epoch milliseconds from ``7d``/``12h``/``30m`` (ago) or an ISO date/time (UTC unless it says).

    >>> parse_time("1d", now=86400.0)
    0
    >>> parse_time("2026-11-01")
    1793491200000
    """
    if text is None or not text.strip():
        return None
    now = time.time() if now is None else now
    match = _DURATION.match(text)
    if match:
        return int((now - float(match.group(1)) * _UNITS[match.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackfillError(f"{what}: cannot read {text!r}; use a duration like 7d, 12h, 30m or a date like 2026-11-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def checkpoint_id(**args: Any) -> str:
    """The checkpoint of a backfill is found by its arguments (same command -> same checkpoint).

    >>> checkpoint_id(experiment="1", since="7d") == checkpoint_id(since="7d", experiment="1")
    True
    """
    return hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_tracking_server(uri: str | None, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """For an ``http(s)://`` tracking URI: fail within ``timeout`` seconds, URI redacted, if nothing answers.

    Runs before MLflow is imported (2 s of its own), so a wrong URI is said at once.
    Any HTTP reply counts as an answer.
    """
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    if not uri or urlsplit(uri).scheme not in ("http", "https"):
        return
    parts = urlsplit(uri)
    bare = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(bare, timeout=timeout).close()  # noqa: S310 (the user's own tracking server)
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackfillError(f"MLflow at {redact_url(uri)} is unreachable ({reason}); is the tracking server running?") from None


def check_mlflow(store: Any, uri: str | None, *, timeout: float | None = None) -> None:
    """Fail in about ``timeout`` seconds, URI redacted, when the tracking store does not answer.

    The default is ``PROBE_TIMEOUT_SECONDS`` for an ``http(s)://`` server and ``LOCAL_STORE_TIMEOUT_SECONDS``
    for a store MLflow opens in this process (a sqlite file's first open alone can take longer than 1.5 s).
    """
    import concurrent.futures
    from urllib.parse import urlsplit

    if timeout is None:
        remote = bool(uri) and urlsplit(uri).scheme in ("http", "https")
        timeout = PROBE_TIMEOUT_SECONDS if remote else LOCAL_STORE_TIMEOUT_SECONDS

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(lambda: store.client.search_experiments(max_results=1))
    shown = redact_url(uri or "the default tracking URI")
    try:
        future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise BackfillError(f"MLflow at {shown} did not answer within {timeout:g} s; is the tracking server running?") from None
    except Exception as exc:
        raise BackfillError(f"MLflow at {shown} is unreachable: {redact_url(str(exc))[:300]}") from None
    finally:
        pool.shutdown(wait=False)


def queue_depth(redis: Any, queue: str, prefix: str = "") -> int:
    """Messages waiting on a Celery queue (kombu's Redis list, under the key prefix)."""
    return int(redis.llen(f"{prefix}{queue}"))


#: How often a backfill held back by a deep queue looks at it again.
HOLD_BACK_POLL_SECONDS = 0.5


def hold_back(state: Any, *, queue: str, max_queue: int, waiting: Callable[[str], None]) -> None:
    """Return once ``queue`` holds ``max_queue`` messages or fewer (0: never wait), calling ``waiting(reason)`` at each look.

    Back-pressure for a backfill (traces or sessions): it never queues more than the workers, and the rate
    limit, can absorb. ``state`` is the :class:`~tracejudge.tasks.state.RedisState` (its Redis and key prefix).
    """
    while max_queue and queue_depth(state.redis, queue, state.prefix) > max_queue:
        waiting(f"holding back: queue deeper than {max_queue}")
        time.sleep(HOLD_BACK_POLL_SECONDS)


def run_backfill(
    *,
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    experiment_id: str,
    fingerprint: str,
    enqueue: Callable[[str], Any],
    since_ms: int | None = None,
    until_ms: int | None = None,
    filter_string: str | None = None,
    sample: float | None = None,
    force: bool = False,
    dry_run: bool = False,
    max_traces: int | None = None,
    resume: bool = False,
    checkpoint: str,
    max_queue: int = DEFAULT_MAX_QUEUE,
    queue: str = "tracejudge.online",
    page_size: int = 200,
    progress: Callable[[BackfillCounts, str], None] | None = None,
    sample_size: int = 10,
) -> BackfillResult:
    """Page through the experiment's traces and enqueue each one to judge (see the module docstring).

    ``store`` is the :class:`~tracejudge.mlflow_io.store.TraceStore`, ``state`` the
    :class:`~tracejudge.tasks.state.RedisState` (checkpoint, queue depth);
    ``enqueue(trace_id)`` returns a handle (``status == 'skipped'`` when sampling left it out).
    """
    from tracejudge.mlflow_io.search import time_filter
    from tracejudge.controls.judged import already_judged
    from tracejudge.controls.sampling import filter_reason, sampling_decision

    name = f"{CHECKPOINT}{checkpoint}"
    counts = BackfillCounts()
    token: str | None = None
    resumed = False
    if resume and not dry_run:
        raw = state.watermarks.get(name)
        if raw:
            saved = json.loads(raw)
            if saved.get("done"):
                return BackfillResult(counts=BackfillCounts(**saved["counts"]), resumed=True, checkpoint=checkpoint)
            counts = BackfillCounts(**saved["counts"])
            token = saved.get("page_token")
            since_ms, until_ms = saved.get("since_ms"), saved.get("until_ms")
            resumed = True
    query = time_filter(since_ms=since_ms, until_ms=until_ms, extra=filter_string)
    result = BackfillResult(counts=counts, resumed=resumed, checkpoint=checkpoint)
    started = time.perf_counter()
    filters = config.judges.filters
    note = progress or (lambda c, s: None)

    def save(page_token: str | None, done: bool) -> None:
        if dry_run:
            return
        saved = {"counts": asdict(counts), "page_token": page_token, "since_ms": since_ms, "until_ms": until_ms, "done": done}
        state.watermarks.set(name, json.dumps(saved), ttl_seconds=CHECKPOINT_TTL_SECONDS)

    finished = False
    while True:
        page = store.search_traces([experiment_id], filter_string=query, page_token=token, max_results=page_size)
        for info in page.traces:
            if max_traces is not None and counts.seen >= max_traces:
                finished = True
                break
            counts.seen += 1
            tags = dict(getattr(info, "tags", None) or {})
            trace_state = str(getattr(info, "state", "") or "").rsplit(".", 1)[-1].upper()
            if trace_state == "IN_PROGRESS":
                counts.unfinished += 1
            elif not force and already_judged(info, fingerprint):
                counts.skipped_judged += 1
            elif filter_reason(filters, workflow=tags.get("mlflow.traceName"), tags=tags, state=trace_state) is not None:
                counts.skipped_filter += 1
            elif dry_run:
                if sampling_decision(info.trace_id, config, sample=sample) is not None:
                    counts.skipped_sampling += 1
                else:
                    counts.enqueued += 1
                    if not force:
                        _count_transient(info, counts)
                    if len(result.sample_ids) < sample_size:
                        result.sample_ids.append(info.trace_id)
            else:
                hold_back(state, queue=queue, max_queue=max_queue, waiting=lambda why: note(counts, why))
                handle = enqueue(info.trace_id)
                if getattr(handle, "status", None) == "skipped":
                    counts.skipped_sampling += 1
                else:
                    counts.enqueued += 1
                    if not force:
                        _count_transient(info, counts)
                    result.handles.append(handle)
                    if len(result.sample_ids) < sample_size:
                        result.sample_ids.append(info.trace_id)
            note(counts, "")
        # The checkpoint resumes at the next page: a page is redone at most once after an interruption,
        # and traces enqueued twice are judged once (reused results).
        finished = finished or not page.next_page_token
        save(None if finished else page.next_page_token, finished)
        if finished:
            break
        token = page.next_page_token
    result.seconds = time.perf_counter() - started
    return result


def wait_for_verdicts(handles: Sequence[Any], *, timeout: float, progress: Callable[[int, dict[str, int]], None] | None = None) -> dict[str, int]:
    """Wait for every handle's verdict; returns counts by status (``timeout`` for those not back)."""
    from tracejudge.enqueue import EvaluationFailed, EvaluationTimeout

    tally: dict[str, int] = {}
    errors: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    for index, handle in enumerate(handles, 1):
        try:
            # check_workers=False: past the deadline every handle times out at once; one broadcast each would add seconds
            verdict = handle.verdict(timeout=max(0.1, deadline - time.monotonic()), raise_on_block=False, check_workers=False)
            status = verdict.status
            for r in verdict.errors:
                if r.error is not None:
                    errors[r.error.type] = errors.get(r.error.type, 0) + 1
            if verdict.error is not None:
                errors[verdict.error.type] = errors.get(verdict.error.type, 0) + 1
        except EvaluationTimeout:
            status = "timeout"
        except EvaluationFailed:
            status = "crashed"
        tally[status] = tally.get(status, 0) + 1
        if progress is not None:
            progress(index, tally)
    tally.update({f"error:{code}": n for code, n in errors.items()})
    return tally
