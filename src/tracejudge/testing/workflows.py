"""Sample traced workflows for the demo, the tests and the benchmarks.

``article_writer`` has the shape the design document describes: a root
span, a ``node_research`` span (AGENT, ``node.id`` attribute) with a
``tool_search`` span (TOOL) under it, and a ``node_write`` span. The texts
can be chosen, so a test can put fake-LLM markers (``[[tj:score=0.3]]``) in
what a judge will read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_RESEARCH = (
    "AI safety research studies how to make AI systems behave as intended: alignment of goals, "
    "robustness to distribution shift, interpretability of learned representations, and oversight."
)
DEFAULT_ARTICLE = (
    "AI Safety: why it matters. As AI systems grow more capable, making sure they pursue the goals we intend "
    "becomes central. Researchers work on alignment, robustness and interpretability (Amodei et al., 2016)."
)
DEFAULT_SOURCES = [
    {"title": "Concrete Problems in AI Safety", "url": "https://arxiv.org/abs/1606.06565", "year": 2016},
    {"title": "Interpretability in practice", "url": "https://example.org/interp", "year": 2024},
]


def record_article_trace(
    *,
    topic: str = "AI Safety",
    research: str = DEFAULT_RESEARCH,
    article: str = DEFAULT_ARTICLE,
    sources: list[dict[str, Any]] | None = None,
    in_run: bool = True,
    run_name: str = "article_writer",
    during: Callable[[str], Any] | None = None,
) -> str:
    """Run the sample ``article_writer`` workflow under MLflow tracing; returns its trace id.

    The trace is exported asynchronously, as in production: a worker may find
    it "not found" for a moment. ``during(trace_id)`` runs inside the workflow,
    before its nodes: a trace enqueued there is judged only after it is exported.
    """
    import mlflow
    from mlflow.entities import SpanType

    sources = DEFAULT_SOURCES if sources is None else sources

    @mlflow.trace(name="tool_search", span_type=SpanType.TOOL, attributes={"tool.name": "serper_search"})
    def search(query: str) -> dict[str, Any]:
        return {"results": sources, "result_count": len(sources)}

    @mlflow.trace(name="node_research", span_type=SpanType.AGENT, attributes={"node.id": "research", "node.type": "research"})
    def research_node(topic: str) -> dict[str, Any]:
        found = search(f"{topic} research papers")
        return {"findings": research, "sources": [s["url"] for s in found["results"]]}

    @mlflow.trace(name="node_write", span_type=SpanType.AGENT, attributes={"node.type": "write"})
    def write_node(topic: str, research: str) -> dict[str, Any]:
        return {"article": article}

    @mlflow.trace(name="article_writer", span_type=SpanType.CHAIN)
    def article_writer(topic: str, style: str = "technical") -> dict[str, Any]:
        if during is not None:
            during(mlflow.get_active_trace_id())
        notes = research_node(topic)
        return write_node(topic, notes["findings"])

    if in_run:
        with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None):
            article_writer(topic)
    else:
        article_writer(topic)
    trace_id = mlflow.get_last_active_trace_id(thread_local=True) or mlflow.get_last_active_trace_id()
    assert trace_id, "MLflow recorded no trace"
    return trace_id


def record_plain_trace(question: str, answer: str) -> str:
    """A trace with just a root span (no nodes): ``qa(question) -> answer``."""
    import mlflow

    @mlflow.trace(name="qa")
    def qa(question: str) -> str:
        return answer

    qa(question)
    trace_id = mlflow.get_last_active_trace_id(thread_local=True) or mlflow.get_last_active_trace_id()
    assert trace_id, "MLflow recorded no trace"
    return trace_id
