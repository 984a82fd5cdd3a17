"""The monitor's summary: what ``tracejudge report --format json`` prints and the dashboard's API returns.

The JSON schema is ``QualitySummary.model_json_schema()`` (``tracejudge report --schema``); docs/report-and-dashboard.md
("The report") describes each field. ``schema_version`` changes when a field changes meaning or goes away.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class Stats(BaseModel):
    """Scores of one judge (or one judge on one node) over the window."""

    count: int = Field(description="results with a score")
    mean: float | None = None
    variance: float | None = Field(None, description="population variance of the scores")
    p10: float | None = Field(None, description="percentiles of the scores (to 0.001; linear between ranks, as SQL's PERCENTILE_CONT)")
    p50: float | None = None
    p90: float | None = None
    min: float | None = Field(None, description="lowest score")
    max: float | None = Field(None, description="highest score")
    below: int = Field(0, description="results below their threshold (passed=false)")
    failure_rate: float | None = Field(None, description="below / count")
    errors: int = Field(0, description="results that failed to score (an AssessmentError)")


class BucketPoint(BaseModel):
    """One time bucket of a series."""

    start: str = Field(description="bucket start, ISO 8601 UTC")
    count: int
    mean: float | None = None
    failure_rate: float | None = None


class JudgeStats(Stats):
    judge: str
    dimension: str | None = Field(None, description="correctness, relevance, coherence, completeness or safety")
    series: list[BucketPoint] = Field(default_factory=list)


class NodeStats(Stats):
    node: str
    judge: str
    threshold: float | None = None
    histogram: list[int] = Field(default_factory=list, description="counts of scores in [0,0.1), ..., [0.9,1.0]")
    histogram_below: list[int] = Field(
        default_factory=list, description="of each bin's count, the results below their threshold (failed)"
    )
    series: list[BucketPoint] = Field(default_factory=list)


class Bucket(BaseModel):
    """Everything per time bucket."""

    start: str
    traces: int
    gate_pass_rate: float | None = Field(None, description="share of verdicts 'passed'")
    failure_rate: float | None = Field(None, description="share of scored results below threshold")
    mean: float | None = None
    errors: dict[str, int] = Field(default_factory=dict, description="error code -> count")
    bands: dict[str, int] = Field(default_factory=dict)
    cost_usd: float = 0.0


class TraceRef(BaseModel):
    trace_id: str
    score: float
    url: str


class Theme(BaseModel):
    """A phrase frequent in one judge's failing rationales (and rarer elsewhere)."""

    judge: str
    phrase: str
    count: int = Field(description="traces with a failing rationale of this judge containing the phrase (each once)")
    examples: list[str] = Field(default_factory=list, description="trace ids, each once")


class Failure(BaseModel):
    """One failing result (below threshold or errored), for alert examples."""

    trace_id: str
    judge: str
    node: str
    score: float | None = None
    error_code: str | None = None
    url: str


class WorstNode(BaseModel):
    node: str
    judge: str
    below: int
    count: int
    failure_rate: float


class Totals(BaseModel):
    traces: int
    results: int = Field(description="judge results, scored or errored")
    scored: int
    below: int
    errors: int
    mean: float | None = None
    failure_rate: float | None = None
    gate_pass_rate: float | None = None
    verdicts: dict[str, int] = Field(default_factory=dict, description="passed / failed / error")
    cost_usd: float = 0.0


class SessionJudgeStats(BaseModel):
    """One session judge over the conversations judged in the window."""

    judge: str
    count: int = Field(description="sessions with a score from this judge")
    mean: float | None = None
    below: int = Field(0, description="scores below their threshold")
    failure_rate: float | None = Field(None, description="below / count")
    errors: int = Field(0, description="results that failed to score")


class SessionFigures(BaseModel):
    """Conversations (MLflow sessions) judged in the window: counted where they began (their first trace)."""

    sessions: int = Field(description="sessions with at least one valid result of a session judge")
    failed: int = Field(0, description="sessions with a result below its threshold or errored")
    failure_rate: float | None = Field(None, description="failed / sessions")
    mean_turns: float | None = Field(None, description="mean number of turns judged per session")
    judges: list[SessionJudgeStats] = Field(default_factory=list)
    note: str | None = Field(
        None,
        description="how the summary's filters applied to sessions (each on the session's first turn: the trace its "
        "results sit on), and that they are read from MLflow whatever the source; None without filters",
    )


class RetryFigures(BaseModel):
    """Traces in the window whose valid results are not all final (issue 17): automatic retries, and where each
    figure comes from (``sources``: the record, or Redis coordination)."""

    non_final: int = Field(0, description="traces with at least one valid result of ours that is a transient failure")
    due: int = Field(0, description="of those, with fewer failed evaluations than the cap: an automatic retry is due")
    waiting: int | None = Field(
        None, description="of those due, with a retry waiting in Redis's deferred set (None: no Redis to ask)"
    )
    not_scheduled: int | None = Field(
        None, description="due but with no retry waiting: gate, forced or partial runs (never retried in the "
        "background), a lost Redis; a plain `tracejudge backfill` judges them again (None: no Redis to ask)",
    )
    gave_up: int = Field(0, description="traces whose automatic retries are used up (the cap reached)")
    gave_up_codes: dict[str, int] = Field(
        default_factory=dict, description="traces given up on, per transient error code on them (a trace may have several)"
    )
    attempt_cap: int = Field(description="failed evaluations after which a trace is given up on (the first + the retries)")
    sources: dict[str, str] = Field(default_factory=dict, description="figure -> where it was read")


class ToolPoint(BaseModel):
    """One tool's calls in one time bucket."""

    start: str = Field(description="bucket start, ISO 8601 UTC")
    calls: int
    failed: int = 0
    failure_rate: float | None = Field(None, description="failed / calls")


class ToolFigures(BaseModel):
    """One tool over the window (or ``(other)``: the tools past the ten with most calls, summed)."""

    tool: str
    calls: int
    failed: int = Field(0, description="calls whose span ended in an error")
    failure_rate: float | None = Field(None, description="failed / calls")
    retries: int = Field(0, description="calls repeating a failed call of the same tool just before it")
    mean_ms: float | None = Field(None, description="mean call duration (ms)")
    p95_ms: float | None = Field(
        None, description="95th percentile call duration: the upper edge (ms) of its latency bin (1-2-5 steps from "
        "1 ms to 300 s); None above 300 s"
    )
    series: list[ToolPoint] = Field(default_factory=list, description="per bucket where the tool was called")


class ToolTotals(BaseModel):
    """Tool calls of the judged traces in the window, counted from their spans (no LLM call)."""

    traces: int = Field(description="judged traces that made tool calls")
    calls: int
    failed: int = 0
    failure_rate: float | None = Field(None, description="failed / calls")
    retries: int = 0
    distinct_tools: int = Field(0, description="tool names seen (at most 20 per trace, the rest as '(other)')")


class Links(BaseModel):
    """Links into the MLflow UI (``monitor/links.py``). Without a known UI address (a local store, no
    ``MLFLOW_UI_URL``) the links are paths in the UI (``/#/experiments/...``) and ``open_ui`` says how to start it."""

    mlflow_ui: str | None = Field(description="the UI's address; None when not known (a local store)")
    open_ui: str | None = Field(None, description="how to open the UI when its address is not known: the command to run")
    experiment_quality: str = Field(description="the experiment's Overview -> Quality tab in the MLflow UI")
    experiment_traces: str


class QualitySummary(BaseModel):
    """Judged quality of one experiment (optionally one workflow / environment) over a window."""

    schema_version: int = SCHEMA_VERSION
    experiment_id: str
    workflow: str | None = None
    environment: str | None = None
    source: Literal["mlflow", "redis"] = Field(description="where the figures came from")
    source_note: str | None = Field(
        None, description="why this source (--source auto), or what Redis may miss of the window (--source redis)"
    )
    since: str
    until: str
    bucket: Literal["hour", "day"]
    totals: Totals
    buckets: list[Bucket]
    judges: list[JudgeStats]
    nodes: list[NodeStats]
    error_codes: dict[str, int]
    bands: dict[str, int]
    dimensions: dict[str, float] = Field(description="mean score per design dimension (judges grouped)")
    top_traces: list[TraceRef]
    bottom_traces: list[TraceRef]
    worst_nodes: list[WorstNode]
    themes: list[Theme]
    failures: list[Failure] = Field(default_factory=list, description="up to 50 failing results, newest buckets first")
    counters: dict[str, float] = Field(
        default_factory=dict,
        description="production controls' counters over the window's UTC days, when kept: sampled, skipped_sampling, "
        "skipped_filter, skipped_judge_sampling, cache_hit, cache_miss, budget_exceeded, budget_spent_usd",
    )
    daily_counters: dict[str, dict[str, float]] = Field(default_factory=dict, description="the same per UTC day")
    human_agreement: list[dict[str, Any]] = Field(
        default_factory=list,
        description="judge-vs-human agreement per judge and judge version where people left feedback (HUMAN "
        "assessments under a judge's name on the same span); MLflow source only; see `tracejudge agreement`",
    )
    tool_totals: ToolTotals | None = Field(None, description="tool calls of the judged traces; None when they made none")
    tools: list[ToolFigures] = Field(
        default_factory=list,
        description="per tool, most calls first: the ten tools with most calls in the window, the rest summed as '(other)'",
    )
    sessions: SessionFigures | None = Field(
        None, description="conversations judged in the window (session judges), read from MLflow; None when none were"
    )
    retries: RetryFigures | None = Field(
        None, description="traces with non-final results (transient failures): retries due, waiting, given up; "
        "None from a summariser that does not count them"
    )
    links: Links
    llm_summary: str | None = Field(None, description="a plain-language summary of the themes (report --llm-summary; off by default)")
    seconds: float = Field(0.0, description="time taken to compute the summary")
