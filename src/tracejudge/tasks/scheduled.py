"""The bodies of the scheduled (beat) tasks, independent of any queue: online pick-up and deferred releases.

The worker's beat tasks (``tracejudge.worker.scheduled``) call these with a
``send`` callable that puts one :class:`EvaluationRequest` on the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tracejudge.tasks import counters
from tracejudge.tasks.deferred import release_due
from tracejudge.tasks.judged import plan_fingerprint
from tracejudge.tasks.online import scan
from tracejudge.tasks.payload import EvaluationRequest
from tracejudge.tasks.runtime import get_runtime
from tracejudge.tasks.sampling import sampling_decision

Send = Callable[[EvaluationRequest], Any]


def release_deferred(send: Send) -> int:
    """Send the deferred evaluations whose time has come; returns how many were sent."""
    state = get_runtime().state
    return release_due(state.redis, state.prefix, send)


def run_online_scan(send: Send) -> dict[str, Any]:
    """One scan with the worker's own config: new finished traces, through sampling, onto the queue."""
    runtime = get_runtime()
    config, state = runtime.config, runtime.state
    fingerprint = plan_fingerprint(config, runtime.registry.with_config(config), default_model=runtime.settings.default_model)

    def enqueue(trace_id: str, workflow: str) -> None:
        skip = sampling_decision(trace_id, config)
        counters.add(state.redis, state.prefix, {(workflow or None, counters.SKIPPED_SAMPLING if skip else counters.SAMPLED): 1})
        if skip is None:
            send(EvaluationRequest(trace_id=trace_id))

    result = scan(
        client=runtime.store.client, redis=state.redis, prefix=state.prefix, config=config, fingerprint=fingerprint, enqueue=enqueue
    )
    return {
        "enqueued": result.enqueued,
        "already_seen": result.already_seen,
        "already_judged": result.already_judged,
        "skipped_locked": result.skipped_locked,
    }
