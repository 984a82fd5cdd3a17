"""Verdicts as plain text, for the ``tracejudge`` command and the demo."""

from __future__ import annotations

from typing import Any


def format_verdict(verdict: Any, *, rationale_width: int = 60) -> str:
    """A plain-text table: node, judge, score, threshold, pass, rationale (cut to ``rationale_width``); then each
    judge error's whole message, the verdict and its warnings.

    >>> from tracejudge.verdict import QualityVerdict
    >>> v = QualityVerdict(trace_id="tr-1", status="error", threshold=0.8, warnings=["node_overrides.research matches no node"])
    >>> format_verdict(v).splitlines()[-1]
    'warning: node_overrides.research matches no node'
    """
    rows = [("node", "judge", "score", "threshold", "pass", "rationale / error")]
    for r in verdict.results():
        score = "-" if r.score is None else f"{r.score:.2f}"
        note = f"{r.error.type}: {r.error.message}" if r.error else (r.rationale or "")
        note = note.replace("\n", " ")
        if len(note) > rationale_width:
            note = note[: rationale_width - 3] + "..."
        rows.append((r.target, r.name, score, f"{r.threshold:g}", "yes" if r.passed else ("ERROR" if r.error else "no"), note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows if len(rows) > 1 else ()):  # no results (an error before judging): no empty table
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:-1])) + "  " + row[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 17)
    if lines:
        lines.append("")
    errors = [r for r in verdict.results() if r.error]
    for r in errors:  # the table cuts the message; here it is whole (what to fix is often at its end)
        lines.append(f"error: {r.target} {r.name}: {r.error.type}: {r.error.message}")
    if errors:
        lines.append("")
    lines.append(f"verdict: {verdict.summary()}")
    if verdict.retry_nodes:
        lines.append(f"retry nodes: {', '.join(verdict.retry_nodes)}")
    usage = getattr(verdict, "tool_usage", None)
    if usage is not None:  # counted from the trace's spans, no LLM call
        per_tool = ", ".join(
            f"{name} {s.calls}" + (f" ({s.failed} failed)" if s.failed else "") + (f" {s.avg_duration_ms:g} ms avg" if s.avg_duration_ms is not None else "")
            for name, s in usage.tools.items()
        )
        lines.append(f"tool calls: {usage.total.calls}, failed {usage.total.failed}, retries {usage.total.retries}: {per_tool}")
    for warning in verdict.warnings or ():  # e.g. a node_overrides key that matched no node of the trace
        lines.append(f"warning: {warning}")
    if verdict.artifact_uri:
        lines.append(f"report: {verdict.artifact_uri}")
    return "\n".join(lines)
