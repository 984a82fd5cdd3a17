"""The summary as text: a terminal table, Markdown (CI job summaries), JSON, or one self-contained HTML file.

The HTML file inlines the vendored chart library and the dashboard's own script, with the summary as data: it
opens offline and can be attached to an email.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources

from tracejudge.monitor.links import where
from tracejudge.monitor.models import QualitySummary

FORMATS = ("table", "json", "html", "md")


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal, '-' when there is none.

    >>> pct(0.4), pct(None)
    ('40.0%', '-')
    """
    return "-" if value is None else f"{value * 100:.1f}%"


def num(value: float | None) -> str:
    """A score with three decimals.

    >>> num(0.70), num(None)
    ('0.700', '-')
    """
    return "-" if value is None else f"{value:.3f}"


def render(summary: QualitySummary, fmt: str) -> str:
    if fmt == "json":
        return summary.model_dump_json(indent=2)
    if fmt == "table":
        return to_table(summary)
    if fmt == "md":
        return to_markdown(summary)
    if fmt == "html":
        return to_html(summary)
    raise ValueError(f"--format: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _node_rows(s: QualitySummary) -> list[list[str]]:
    rows = []
    for n in s.nodes:
        rows.append(
            [n.node, n.judge, str(n.count), num(n.mean), num(n.p10), num(n.p50), num(n.p90), "-" if n.threshold is None else f"{n.threshold:g}", pct(n.failure_rate), str(n.errors)]
        )
    return rows


NODE_HEADER = ["node", "judge", "n", "mean", "p10", "p50", "p90", "threshold", "below", "errors"]


def _header_lines(s: QualitySummary) -> list[str]:
    scope = f"experiment {s.experiment_id}"
    if s.workflow:
        scope += f", workflow {s.workflow}"
    if s.environment:
        scope += f", environment {s.environment}"
    t = s.totals
    lines = [
        f"Quality of {scope}, {s.since} .. {s.until} (source: {s.source})",
        f"traces {t.traces}  results {t.results}  mean {num(t.mean)}  below threshold {pct(t.failure_rate)}  "
        f"gate pass rate {pct(t.gate_pass_rate)}  judge errors {t.errors}"
        + (f"  judge cost ${t.cost_usd:.4f}" if t.cost_usd else ""),
    ]
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return out


def to_table(s: QualitySummary) -> str:
    """Fits an 100-column terminal."""
    lines = _header_lines(s) + ([f"source: {s.source_note}"] if s.source_note else []) + [""]
    lines += _table(NODE_HEADER, _node_rows(s))
    if s.buckets:
        lines += ["", f"per {s.bucket}:"]
        lines += _table(
            ["start", "traces", "mean", "below", "gate pass", "errors"],
            [[b.start, str(b.traces), num(b.mean), pct(b.failure_rate), pct(b.gate_pass_rate), str(sum(b.errors.values()))] for b in s.buckets],
        )
    if s.error_codes:
        lines += ["", "errors: " + ", ".join(f"{k} {v}" for k, v in s.error_codes.items())]
    if s.bands:
        lines += ["bands: " + ", ".join(f"{k} {v}" for k, v in s.bands.items())]
    if s.counters:
        lines += ["controls: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in s.counters.items())]
    if s.retries and (s.retries.non_final or s.retries.waiting):
        lines += ["", "traces with non-final results (transient failures; automatic retries):"]
        lines += _table(["figure", "traces", "from"], retry_rows(s))
    if s.worst_nodes:
        lines += ["most often below threshold: " + ", ".join(f"{w.node}/{w.judge} {pct(w.failure_rate)}" for w in s.worst_nodes[:4])]
    if s.bottom_traces:
        lines += ["", "lowest traces:"] + [f"  {num(t.score)}  {t.trace_id}" for t in s.bottom_traces]
    if s.top_traces:
        lines += ["highest traces:"] + [f"  {num(t.score)}  {t.trace_id}" for t in s.top_traces]
    if s.themes:
        lines += ["failure themes:"] + [f"  {t.judge}: \"{t.phrase}\" ({t.count} rationales)" for t in s.themes[:6]]
    if s.tool_totals:
        lines += ["", tool_line(s)]
        lines += _table(TOOL_HEADER, _tool_rows(s))
    if s.sessions:
        lines += ["", session_line(s)] + [
            f"  {j.judge}: {j.count} scored, mean {num(j.mean)}, below {pct(j.failure_rate)}" + (f", {j.errors} errors" if j.errors else "")
            for j in s.sessions.judges
        ] + ([f"  ({s.sessions.note})"] if s.sessions.note else [])
    if s.human_agreement:
        lines += ["", "agreement with people (HUMAN feedback on the same spans):"] + _agreement_lines(s)
    if s.llm_summary:
        lines += ["", f"summary (LLM): {s.llm_summary}"]
    lines += ["", f"MLflow Quality tab: {where(s.links.experiment_quality, s.links)}"]
    return "\n".join(lines)


def to_markdown(s: QualitySummary) -> str:
    """For a CI job summary (``>> $GITHUB_STEP_SUMMARY``)."""
    head, totals = _header_lines(s)
    out = [f"### {head}", "", totals, *(["", f"_Source: {s.source_note}_"] if s.source_note else []), "", "| " + " | ".join(NODE_HEADER) + " |", "|" + "---|" * len(NODE_HEADER)]
    out += ["| " + " | ".join(r) + " |" for r in _node_rows(s)]
    if s.error_codes:
        out += ["", "**Errors:** " + ", ".join(f"`{k}` {v}" for k, v in s.error_codes.items())]
    if s.counters:
        out += ["", "**Controls:** " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in s.counters.items())]
    if s.retries and (s.retries.non_final or s.retries.waiting):
        out += ["", "**Traces with non-final results (automatic retries):**", "", "| figure | traces | from |", "|---|---|---|"]
        out += ["| " + " | ".join(row) + " |" for row in retry_rows(s)]
    if s.worst_nodes:
        out += ["", "**Most often below threshold:** " + ", ".join(f"{w.node}/{w.judge} {pct(w.failure_rate)}" for w in s.worst_nodes[:5])]
    if s.bottom_traces:
        out += ["", "**Lowest traces:** " + ", ".join(
            (f"[{t.trace_id}]({t.url})" if s.links.mlflow_ui else f"`{t.trace_id}`") + f" {num(t.score)}" for t in s.bottom_traces
        )]
    if s.themes:
        out += ["", "**Failure themes:** " + "; ".join(f"{t.judge}: \"{t.phrase}\" ({t.count})" for t in s.themes[:6])]
    if s.tool_totals:
        out += ["", f"**{tool_line(s).capitalize()}**", "", "| " + " | ".join(TOOL_HEADER) + " |", "|" + "---|" * len(TOOL_HEADER)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _tool_rows(s)]
    if s.sessions:
        out += ["", f"**{session_line(s).capitalize()}** " + "; ".join(
            f"{j.judge} mean {num(j.mean)}, below {pct(j.failure_rate)}" for j in s.sessions.judges
        ) + (f" _({s.sessions.note})_" if s.sessions.note else "")]
    if s.human_agreement:
        out += ["", "**Agreement with people:** " + "; ".join(line.strip() for line in _agreement_lines(s))]
    if s.llm_summary:
        out += ["", f"**Summary (LLM):** {s.llm_summary}"]
    if s.links.mlflow_ui:
        out += ["", f"[MLflow Quality tab]({s.links.experiment_quality})"]
    else:
        out += ["", f"MLflow Quality tab: run `{s.links.open_ui}`, then open `{s.links.experiment_quality}` at the address it prints"]
    return "\n".join(out) + "\n"


def retry_rows(s: QualitySummary) -> list[list[str]]:
    """The retry figures as (figure, traces, where it was read) rows; one row per error code of those given up on."""
    r = s.retries
    assert r is not None
    unknown = "-" if r.waiting is None else None
    record = "record (MLflow)" if s.source == "mlflow" else "record (Redis rollups)"

    def src(name: str) -> str:
        text = r.sources.get(name, "")
        return record + text[len("record"):] if text.startswith("record") else text

    rows = [
        ["non-final results", str(r.non_final), src("non_final")],
        [f"  retry due (< {r.attempt_cap} failed evaluations)", str(r.due), src("due")],
        ["    waiting for a retry", unknown or str(r.waiting), src("waiting")],
        ["    none waiting (backfill re-judges)", unknown or str(r.not_scheduled), "due minus waiting"],
        [f"  gave up ({r.attempt_cap} failed evaluations)", str(r.gave_up), src("gave_up")],
    ]
    rows += [[f"    {code}", str(n), "record: their error codes"] for code, n in r.gave_up_codes.items()]
    return rows


TOOL_HEADER = ["tool", "calls", "failed", "failure rate", "retries", "mean ms", "p95 ms"]


def tool_line(s: QualitySummary) -> str:
    """One line on the judged traces' tool calls: how many, how many failed."""
    t = s.tool_totals
    assert t is not None
    return (f"tool usage: {t.calls} calls in {t.traces} traces, failed {t.failed} ({pct(t.failure_rate)}), "
            f"retries {t.retries}, {t.distinct_tools} tools")


def _tool_rows(s: QualitySummary) -> list[list[str]]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    return [[t.tool, str(t.calls), str(t.failed), pct(t.failure_rate), str(t.retries), ms(t.mean_ms), ms(t.p95_ms)] for t in s.tools]


def session_line(s: QualitySummary) -> str:
    """One line on the conversations judged: how many, how many failed, mean turns."""
    f = s.sessions
    assert f is not None
    return f"sessions judged: {f.sessions}, failed {f.failed} ({pct(f.failure_rate)}), mean turns {num(f.mean_turns)}"


def _agreement_lines(s: QualitySummary) -> list[str]:
    lines = []
    for entry in s.human_agreement:
        report = entry.get("report")
        head = f"  {entry['judge']} (version {entry['judge_version']}): {entry['pairs']} pair(s)"
        if not report:
            lines.append(f"{head}, no figures: {entry.get('refused', '')}")
            continue
        lines.append(
            f"{head}, Spearman {num(report.get('spearman'))}, MAE {num(report.get('mae'))}, "
            f"accuracy {pct(report.get('accuracy'))}, kappa {num(report.get('kappa'))}"
        )
    return lines


def static_text(name: str) -> str:
    return resources.files("tracejudge.monitor").joinpath("static", name).read_text(encoding="utf-8")


_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(text: str) -> str:
    """JSON text made safe to inline in a ``<script>``: ``<``, ``>``, ``&``, U+2028/2029 as ``\\uXXXX`` escapes.

    The same value to a JSON parser, but no ``</script>``, ``<!--`` or ``<script`` can appear (judged text is
    inlined: node names, rationales, the LLM summary), and the line separators old JavaScript refuses are gone.

    >>> script_json('{"n": "<!--<script>&"}')
    '{"n": "\\\\u003c!--\\\\u003cscript\\\\u003e\\\\u0026"}'
    """
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group()], text)


def to_html(s: QualitySummary) -> str:
    """One self-contained page: the dashboard's layout with the summary inlined (no server, no network)."""
    data = script_json(s.model_dump_json())
    page = static_text("index.html")
    inline = (
        f"<style>{static_text('dashboard.css')}</style>\n"
        f"<script>{static_text('vendor/chart.umd.min.js')}</script>\n"
        f"<script>window.TRACEJUDGE_SUMMARY = {data};</script>\n"
        f"<script>{static_text('dashboard.js')}</script>"
    )
    page = page.replace('<link rel="stylesheet" href="static/dashboard.css">', "")
    page = page.replace('<script src="static/vendor/chart.umd.min.js"></script>', "")
    page = page.replace('<script src="static/dashboard.js"></script>', inline)
    return page.replace("<title>tracejudge quality</title>", f"<title>tracejudge quality: experiment {html.escape(s.experiment_id)}</title>")


def schema() -> str:
    return json.dumps(QualitySummary.model_json_schema(), indent=2)
