"""Judge one conversation: read its turns, judge what the record lacks, write on its first trace.

For one :class:`SessionRequest`, under a per-session Redis lock:

1. read every turn of the session (spans included), oldest first, waiting up to
   ``trace_wait_seconds`` while a turn is running or not exported yet;
2. plan the session judges (``judges.sessions.judges``, or the request's), each with a key
   over (first trace, session, turns judged, judge, version, model, threshold);
3. reuse a final result already on the first trace with that key (the conversation has not
   grown since) or cached in Redis by an attempt that could not write it; judge the rest;
4. write each new result on the first trace (trace-level, ``mlflow.trace.session`` and the
   turns judged in its metadata, MLflow's convention), superseding (``overrides``) our
   earlier valid result of the same judge for this session: one valid result per (session, judge);
5. return the :class:`SessionVerdict` (all the session judges gate it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tracejudge.config import TraceJudgeConfig
from tracejudge.controls.session_judged import judge_model, plan_session, session_key
from tracejudge.judges.model import JudgeResult
from tracejudge.judges.plan import PlannedJudge
from tracejudge.judges.registry import UnknownJudgeError
from tracejudge.judges.runner import JudgeJob
from tracejudge.judges.session_judges import SESSION_TARGET, conversation_input
from tracejudge.mlflow_io import sessions as session_io
from tracejudge.mlflow_io import writer
from tracejudge.mlflow_io.reader import TraceNotReady
from tracejudge.payload import SessionRequest
from tracejudge.sessions.verdict import SessionVerdict
from tracejudge.tasks.evaluate import LOOP_WAIT_MARGIN_SECONDS, judge_jobs, lock_wait_seconds, trace_wait_left
from tracejudge.tasks.runtime import Runtime
from tracejudge.tasks.state import EvaluationBusy
from tracejudge.verdict import build_verdict

log = logging.getLogger(__name__)

INVALID_SESSION_ID = "INVALID_SESSION_ID"
SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
NO_SESSION_JUDGES = "NO_SESSION_JUDGES"
UNKNOWN_JUDGE = "UNKNOWN_JUDGE"

__all__ = ["evaluate_session", "session_error", "session_jobs"]


def evaluate_session(request: SessionRequest, runtime: Runtime) -> SessionVerdict:
    """Judge one session end to end (see the module docstring).

    Raises only what is worth a retry: ``MlflowUnavailable`` and :class:`EvaluationBusy`.
    """
    config = request.config or runtime.config
    environment = request.environment or runtime.settings.environment
    execution = config.judges.execution
    sid = request.session_id

    def error(code: str, message: str, **fields: Any) -> SessionVerdict:
        return session_error(sid, code, message, config, evaluation_id=request.evaluation_id, **fields)

    try:
        session_io.check_session_id(sid)
    except session_io.InvalidSessionId as exc:
        return error(INVALID_SESSION_ID, str(exc))
    registry = runtime.registry.with_config(config)
    try:
        planned = plan_session(config, registry, judges=request.judges, environment=environment)
    except UnknownJudgeError as exc:
        return error(UNKNOWN_JUDGE, exc.message)
    if not planned:
        return error(NO_SESSION_JUDGES, "no session judges: list some under judges.sessions.judges (or pass judges=...)")
    experiments = experiments_of(runtime, config, request.experiment_id)
    started = time.monotonic()
    state = runtime.state
    with state.trace_lock(f"session:{sid}", timeout=lock_wait_seconds(execution)) as held:
        try:
            session = session_io.wait_for_session(
                runtime.store.client, sid, experiments, wait_seconds=trace_wait_left(execution.trace_wait_seconds, started=started)
            )
        except (TraceNotReady, session_io.SessionNotFound) as exc:
            return error(SESSION_NOT_FOUND, f"{exc} (waited {execution.trace_wait_seconds:g} s)")
        jobs = session_jobs(session, planned, runtime.settings.default_model, max_chars=execution.max_input_chars)
        ours = session_io.session_assessments(session.first_assessments, sid)
        previous = {a.name: a.assessment_id for a in ours}  # what a new result of each judge supersedes
        if request.force:
            known: dict[str, JudgeResult] = {}
        else:
            on_trace = writer.existing_results(ours)
            known = {**state.cached_results([j.key for j in jobs if j.key not in on_trace]), **on_trace}
        todo = [job for job in jobs if job.key not in known]
        fresh: list[JudgeResult] = []
        if todo:
            # bounded like a trace's: a judge that blocks the loop ends in LoopStalled (retried), not a frozen task
            judged = judge_jobs(runtime, todo, config=config, force=request.force,
                                loop_timeout=config.judges.execution.overall_timeout_seconds + LOOP_WAIT_MARGIN_SECONDS)
            fresh = [r.model_copy(update={"metadata": record_metadata(session)}) for r in judged]
            state.cache_results([r for r in fresh if writer.is_final(r)])
        by_key = {**known, **{r.key: r for r in fresh}}
        results = [by_key[job.key] for job in jobs]
        if not held.still_held():  # asked of Redis right before the write-back (see tasks.evaluate.check_lock)
            raise EvaluationBusy(f"the lock of session {sid} was lost before the write-back; retrying later")
        overrides = {r.key: previous[r.name] for r in fresh if r.key and r.name in previous}
        runtime.store.write_all(
            runtime.store.result_calls(session.first_trace_id, fresh, evaluation_id=request.evaluation_id, overrides=overrides)
        )
        state.forget_results([r.key for r in fresh if r.key])
    verdict = session_verdict(session, results, config, evaluation_id=request.evaluation_id, reused=len(results) - len(fresh))
    log.info("evaluated session %s: %s (judged %d, reused %d)", sid, verdict.summary(), verdict.judged, verdict.reused)
    return verdict


def session_jobs(
    session: session_io.LoadedSession, planned: list[PlannedJudge], default_model: str, *, max_chars: int
) -> list[JudgeJob]:
    judge_input = conversation_input(session.session_id, session.turns, max_chars=max_chars)
    jobs = []
    for p in planned:
        model = judge_model(p, default_model)
        key = session_key(session.first_trace_id, session.session_id, session.judged_through, p, model)
        jobs.append(JudgeJob(judge=p.judge, input=judge_input, threshold=p.threshold, model=p.model, key=key))
    return jobs


def record_metadata(session: session_io.LoadedSession) -> dict[str, str]:
    """What a session result records beside its score: the session, and the turns it judged."""
    return {
        session_io.SESSION: session.session_id,
        session_io.TURNS: str(len(session.turns)),
        session_io.LAST_TRACE: session.last_trace_id,
    }


def experiments_of(runtime: Runtime, config: TraceJudgeConfig, experiment_id: str | None) -> list[str]:
    """Where to look for a session's traces: the request's experiment, else ``online.experiments``, else all."""
    if experiment_id:
        return [experiment_id]
    refs = config.judges.online.experiments
    if refs:
        where = f"{config.location('judges')}.online.experiments"
        return [runtime.store.experiment_id(ref, where=f"{where}[{i}]") for i, ref in enumerate(refs)]
    return session_io.all_experiments(runtime.store.client)


def _gate_config(config: TraceJudgeConfig) -> TraceJudgeConfig:
    """The config a session's verdict is decided with: every session judge gates it (``quality_gate.judges``
    names trace judges)."""
    if not config.quality_gate.judges:
        return config
    return config.model_copy(update={"quality_gate": config.quality_gate.model_copy(update={"judges": []})})


def session_verdict(
    session: session_io.LoadedSession, results: list[JudgeResult], config: TraceJudgeConfig, *, evaluation_id: str, reused: int
) -> SessionVerdict:
    verdict = build_verdict(session.first_trace_id, results, _gate_config(config), evaluation_id=evaluation_id, reused=reused)
    return SessionVerdict(
        **verdict.model_dump(exclude={"workflow_name"}),
        workflow_name=SESSION_TARGET,
        session_id=session.session_id,
        turns=len(session.turns),
        last_trace_id=session.last_trace_id,
    )


def session_error(session_id: str, code: str, message: str, config: TraceJudgeConfig, **fields: Any) -> SessionVerdict:
    """A session verdict with status ``error`` and why."""
    from tracejudge.verdict import error_verdict

    verdict = error_verdict(session_id, code, message, config, **fields)
    return SessionVerdict(**verdict.model_dump(), session_id=session_id)
