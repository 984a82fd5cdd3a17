"""The lean REST writer writes what MLflow's client writes, against a real ``mlflow server``.

Each write goes once through MLflow's client (the path for local stores and
the fallback) and once through :class:`RestWriter`, on two traces of the
same shape; what lands is read back with MLflow's client and compared field
by field: assessments (name, value, rationale, error, source, span, metadata,
validity), trace tags, run metrics and the report's bytes. The request body
is also compared with the one MLflow's own ``message_to_json`` builds.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from tracejudge.judges.model import ErrorInfo, JudgeResult, TokenUsage
from tracejudge.mlflow_io import writer
from tracejudge.mlflow_io.reader import MlflowUnavailable
from tracejudge.mlflow_io.rest import RestWriter, feedback_json, rest_writer_for

RESULTS = [
    JudgeResult(name="relevance", target="research", score=0.85, threshold=0.8, passed=True, rationale="on topic",
                model="gpt-4o-mini", duration_ms=201.5, attempts=1, tokens=TokenUsage(prompt=120, completion=30),
                judge_version="abc123", key="k-relevance", truncated={"output": 1200}),
    JudgeResult(name="coherence", target="write", score=0.0, threshold=0.8, passed=False, rationale="",
                model="gpt-4o-mini", key="k-coherence"),
    JudgeResult(name="harmfulness", target="write", score=None, threshold=0.2, passed=False, greater_is_better=False,
                model="gpt-4o-mini", error=ErrorInfo(type="TIMEOUT", message="no reply in 30 s"), attempts=3,
                key="k-harm"),
    JudgeResult(name="length_ok", target="workflow", score=1.0, threshold=0.5, passed=True, model="code", key="k-code"),
]


def test_the_body_is_what_mlflows_client_sends() -> None:
    """Field for field the JSON MLflow's ``message_to_json`` makes for ``log_feedback``'s assessment."""
    from mlflow.protos.service_pb2 import CreateAssessment
    from mlflow.utils.proto_json_utils import message_to_json

    for result in RESULTS:
        for overrides, plan in ((None, None), ("a-0123", None), (None, "5f1c0e9a2b7d4c31")):
            result = result.model_copy(update={"span_id": "0123456789abcdef"})
            feedback = writer.feedback("tr-1", result, evaluation_id="ev-1", overrides=overrides, plan=plan)
            theirs = json.loads(message_to_json(CreateAssessment(assessment=feedback.to_proto())))["assessment"]
            ours = feedback_json("tr-1", result, evaluation_id="ev-1", overrides=overrides, plan=plan)
            for stamp in ("create_time", "last_update_time"):
                assert theirs.pop(stamp)[:10] == ours.pop(stamp)[:10]
            assert ours == theirs, (result.name, overrides, plan)
            assert ours["metadata"].get("tracejudge.plan") == plan


def test_only_tracking_servers_get_a_rest_writer(monkeypatch) -> None:
    """Local stores, no loop, plug-in auth or TRACEJUDGE_REST_WRITER=0: MLflow's client writes."""
    import asyncio as aio

    from tracejudge.config import Settings
    from tracejudge.mlflow_io.store import TraceStore

    assert rest_writer_for("sqlite:////tmp/x.db") is None
    assert rest_writer_for("/tmp/mlruns") is None
    assert rest_writer_for(None) is None
    assert isinstance(rest_writer_for("https://mlflow.example.com"), RestWriter)
    loop = aio.new_event_loop()
    try:
        assert TraceStore("http://127.0.0.1:5000", loop=loop).rest is not None
        assert TraceStore("http://127.0.0.1:5000").rest is None
        assert TraceStore("sqlite:////tmp/x.db", loop=loop).rest is None
        assert TraceStore("http://127.0.0.1:5000", loop=loop, rest_writer=False).rest is None
    finally:
        loop.close()
    monkeypatch.setenv("TRACEJUDGE_REST_WRITER", "0")
    assert Settings.from_env().rest_writer is False
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "some_plugin")
    assert rest_writer_for("http://127.0.0.1:5000") is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``mlflow server``; MLflow's global tracking URI and experiment are put back afterwards."""
    import mlflow

    from tracejudge.testing.processes import MlflowServer

    uri, experiment = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_EXPERIMENT_ID")
    with MlflowServer(directory=tmp_path_factory.mktemp("rest-writer"), workers=1) as srv:
        try:
            yield srv
        finally:
            mlflow.set_tracking_uri(uri)
            from mlflow.tracking import fluent

            fluent._active_experiment_id = None
            if experiment is None:
                os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
            else:
                os.environ["MLFLOW_EXPERIMENT_ID"] = experiment


def _two_traces(server, *, suffix: str = "") -> tuple[str, str, str]:
    import mlflow

    from tracejudge.testing.workflows import record_article_trace

    mlflow.set_tracking_uri(server.url)
    experiment_id = mlflow.create_experiment(f"rest-writer-{os.getpid()}-{id(server)}{suffix}")
    mlflow.set_experiment(experiment_id=experiment_id)
    a = record_article_trace(run_name="client")
    b = record_article_trace(run_name="rest")
    mlflow.flush_trace_async_logging()
    return experiment_id, a, b


def _landed(assessment) -> dict:
    error = assessment.error
    return {
        "name": assessment.name,
        "value": assessment.value,
        "rationale": assessment.rationale,
        "error": (error.error_code, error.error_message) if error else None,
        "source": (assessment.source.source_type, assessment.source.source_id),
        "has_span": assessment.span_id is not None,
        "metadata": {k: v for k, v in (assessment.metadata or {}).items() if k != "timestamp"},
        "valid": assessment.valid,
        "overrides": assessment.overrides,
        "kind": type(assessment).__name__,
    }


#: A trace's tool counts as the evaluation writes them in every feedback's metadata (``tool_record.encode``).
TOOLS = '{"v":1,"tools":{"b\u00fcch|er":[3,1,1,4500,{"2":1,"3":2}]}}'


@pytest.mark.slow
def test_what_lands_is_identical_to_the_clients_writes(server) -> None:
    from tracejudge.mlflow_io.tool_record import decode, read_counts

    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    experiment_id, via_client, via_rest = _two_traces(server)
    client, tracing = MlflowClient(server.url), TracingClient(server.url)
    span_of = {t: {s.name: s.span_id for s in client.get_trace(t).data.spans} for t in (via_client, via_rest)}
    run_of = {t: client.get_trace(t).info.request_metadata["mlflow.sourceRun"] for t in (via_client, via_rest)}
    rest = RestWriter(server.url)
    report = {"trace_id": "x", "status": "failed", "scores": {"research": 0.85, "write": None}, "note": "ünïcode"}
    metrics = {"gate_score": 0.61, "quality_threshold_pass": 0.0}

    for result in RESULTS:
        span = "node_research" if result.target == "research" else ("node_write" if result.target == "write" else None)
        a = result.model_copy(update={"span_id": span_of[via_client].get(span)})
        writer.log_result(tracing, via_client, a, evaluation_id="ev-1", plan="5f1c0e9a2b7d4c31", tools=TOOLS)
    client.set_trace_tag(via_client, "tracejudge.status", "failed")
    client.set_trace_tag(via_client, "tracejudge.score", "0.6100")
    from mlflow.entities import Metric

    step = 1_700_000_000_000
    client.log_batch(run_of[via_client], metrics=[Metric(k, v, step, step) for k, v in metrics.items()])
    client.log_dict(run_of[via_client], report, writer.report_path(via_client))

    async def write_rest() -> None:
        for result in RESULTS:
            span = "node_research" if result.target == "research" else ("node_write" if result.target == "write" else None)
            b = result.model_copy(update={"span_id": span_of[via_rest].get(span)})
            assert await rest.log_feedback(via_rest, b, evaluation_id="ev-1", plan="5f1c0e9a2b7d4c31", tools=TOOLS)
        await rest.set_trace_tag(via_rest, "tracejudge.status", "failed")
        await rest.set_trace_tag(via_rest, "tracejudge.score", "0.6100")
        await rest.log_metrics(run_of[via_rest], metrics, step=step)
        root = await rest.artifact_root(run_of[via_rest], experiment_id)
        assert root is not None
        await rest.log_dict(root, writer.report_path(via_rest), report)
        await rest.aclose()

    asyncio.run(write_rest())

    trace_a, trace_b = client.get_trace(via_client), client.get_trace(via_rest)
    landed_a = sorted((_landed(x) for x in trace_a.info.assessments), key=lambda d: d["name"])
    landed_b = sorted((_landed(x) for x in trace_b.info.assessments), key=lambda d: d["name"])
    assert len(landed_a) == len(RESULTS) and landed_a == landed_b
    span_name = {t: {v: k for k, v in span_of[t].items()} for t in span_of}
    assert sorted((x.name, span_name[via_client].get(x.span_id)) for x in trace_a.info.assessments) == sorted(
        (x.name, span_name[via_rest].get(x.span_id)) for x in trace_b.info.assessments
    )
    # the tool counts the monitor reads are there, the same way
    assert read_counts(trace_a.info.assessments) == read_counts(trace_b.info.assessments) == decode(TOOLS)
    # the key the worker reads back for idempotency is there, the same way
    assert set(writer.existing_results(trace_a.info.assessments)) == set(writer.existing_results(trace_b.info.assessments))
    ours = {k: v for k, v in trace_b.info.tags.items() if k.startswith("tracejudge.")}
    assert ours == {k: v for k, v in trace_a.info.tags.items() if k.startswith("tracejudge.")}
    assert ours == {"tracejudge.status": "failed", "tracejudge.score": "0.6100"}
    got = {}
    for t in (via_client, via_rest):
        run = client.get_run(run_of[t])
        history = {k: [(m.value, m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id, k)] for k in metrics}
        raw = client.download_artifacts(run.info.run_id, writer.report_path(t))
        with open(raw, "rb") as fh:
            got[t] = (run.data.metrics, history, fh.read())
    assert got[via_client] == got[via_rest]
    assert json.loads(got[via_rest][2]) == report


@pytest.mark.slow
def test_a_refused_write_and_a_dead_server_are_told_apart(server) -> None:
    """A write MLflow refuses is an error naming MLflow's code; a server that does not answer is retryable."""
    from tracejudge.mlflow_io.rest import MlflowWriteError
    from tracejudge.testing.processes import free_port

    async def go() -> None:
        rest = RestWriter(server.url)
        with pytest.raises(MlflowWriteError) as refused:
            await rest.log_metrics("no-such-run", {"x": 1.0})
        assert refused.value.status in (400, 404) and refused.value.error_code
        await rest.aclose()
        dead = RestWriter(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(MlflowUnavailable):
            await dead.set_trace_tag("tr-1", "k", "v")
        await dead.aclose()

    asyncio.run(go())


@pytest.mark.slow
def test_a_rejudged_result_supersedes_ours_the_same_way_through_both_writers(server) -> None:
    """Issue 17, point 4: a new result (new threshold, model or version: a new key) names our valid assessment at
    its (span, judge) in ``overrides``; through either writer MLflow then holds one valid assessment of ours per
    (span, judge), and a person's assessment there stays valid."""
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.tracing.client import TracingClient

    _, via_client, via_rest = _two_traces(server, suffix="-rejudged")
    client, tracing = MlflowClient(server.url), TracingClient(server.url)
    span_of = {t: {s.name: s.span_id for s in client.get_trace(t).data.spans} for t in (via_client, via_rest)}

    def placed(trace_id: str, results: list[JudgeResult]) -> list[JudgeResult]:
        spans = {"research": "node_research", "write": "node_write"}
        return [r.model_copy(update={"span_id": span_of[trace_id].get(spans.get(r.target, ""))}) for r in results]

    rejudged = [
        r.model_copy(update={"key": f"{r.key}-2", "threshold": 0.6, "model": "gpt-4o" if r.model != "code" else "code",
                             "judge_version": "v2", "score": 0.5 if r.error is None else None})
        for r in RESULTS
    ]

    async def write_rest(results: list[JudgeResult], overrides: dict[str, str]) -> None:
        rest = RestWriter(server.url)
        for r in placed(via_rest, results):
            assert await rest.log_feedback(via_rest, r, evaluation_id="ev-2", overrides=overrides.get(r.key or ""))
        await rest.aclose()

    for t in (via_client, via_rest):  # the first judgement, and a person's feedback beside ours on node_write
        for r in placed(t, RESULTS):
            writer.log_result(tracing, t, r, evaluation_id="ev-1")
        tracing.log_assessment(t, Feedback(name="coherence", value=0.9, span_id=span_of[t]["node_write"], trace_id=t,
                                           source=AssessmentSource(source_type="HUMAN", source_id="ana")))
    before = {t: client.get_trace(t).info.assessments for t in (via_client, via_rest)}
    for r in placed(via_client, rejudged):
        writer.log_result(tracing, via_client, r, evaluation_id="ev-2",
                          overrides=writer.supersedes(before[via_client], [r]).get(r.key or ""))
    asyncio.run(write_rest(rejudged, writer.supersedes(before[via_rest], placed(via_rest, rejudged))))

    def landed(trace_id: str) -> list[dict]:
        assessments = client.get_trace(trace_id).info.assessments
        by_id = {a.assessment_id: a for a in assessments}
        span_name = {v: k for k, v in span_of[trace_id].items()}
        rows = []
        for a in assessments:
            row = _landed(a) | {"span": span_name.get(a.span_id)}
            old = by_id.get(a.overrides) if a.overrides else None
            row["overrides"] = None if old is None else (old.name, span_name.get(old.span_id), old.metadata[writer.KEY])
            rows.append(row)
        return sorted(rows, key=lambda d: json.dumps(d, sort_keys=True, default=str))

    assert landed(via_client) == landed(via_rest)
    for t in (via_client, via_rest):
        assessments = client.get_trace(t).info.assessments
        valid = [(a.span_id, a.name) for a in assessments if writer.is_ours(a)]
        assert len(valid) == len(set(valid)) == len(RESULTS)
        assert {a.metadata[writer.KEY] for a in assessments if writer.is_ours(a)} == {r.key for r in rejudged}
        [person] = [a for a in assessments if a.source.source_type == "HUMAN"]
        assert person.valid is not False and person.value == 0.9
