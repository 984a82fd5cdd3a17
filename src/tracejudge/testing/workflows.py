"""Sample traced workflows for the demo, the tests and the benchmarks.

``article_writer`` has the shape the design document describes: a root
span, a ``node_research`` span (AGENT, ``node.id`` attribute) with a
``tool_search`` span (TOOL) under it, and a ``node_write`` span. The texts
can be chosen, so a test can put fake-LLM markers (``[[tj:score=0.3]]``) in
what a judge will read.
"""

from __future__ import annotations

import json
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
    agent: bool = False,
) -> str:
    """Run the sample ``article_writer`` workflow under MLflow tracing; returns its trace id.

    ``agent=True`` makes the research node a tool-calling agent (the demo's): its chat model
    asks for the search, then for the top source's page (``tool_fetch_page``), then writes the findings.

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

    @mlflow.trace(name="tool_fetch_page", span_type=SpanType.TOOL, attributes={"tool.name": "fetch_page"})
    def fetch_page(url: str) -> dict[str, Any]:
        return {"url": url, "text": research}

    def chat(request: str, content: str | None, call: tuple[str, dict[str, Any]] | None) -> None:
        with mlflow.start_span(name="chat", span_type=SpanType.CHAT_MODEL) as span:
            span.set_inputs({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": request}]})
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if call is not None:
                message["tool_calls"] = [{"id": "call_0", "type": "function", "function": {"name": call[0], "arguments": json.dumps(call[1])}}]
            span.set_outputs({"choices": [{"index": 0, "message": message}]})

    @mlflow.trace(name="node_research", span_type=SpanType.AGENT, attributes={"node.id": "research", "node.type": "research"})
    def research_node(topic: str) -> dict[str, Any]:
        query = f"{topic} research papers"
        if agent:
            chat(f"Research {topic} for an article.", None, ("serper_search", {"query": query}))
        found = search(query)
        if agent and found["results"]:
            top = found["results"][0]["url"]
            chat(json.dumps(found), None, ("fetch_page", {"url": top}))
            fetch_page(top)
            chat("page text", research, None)
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


AGENT_REQUEST = "Book the cheapest flight from SFO to JFK on 2026-12-24."
AGENT_FLIGHTS = {"flights": [{"id": "UA12", "price_usd": 310}, {"id": "DL7", "price_usd": 285}]}
AGENT_BOOKING = {"confirmation": "XK4F2Q", "flight_id": "DL7", "status": "booked"}
AGENT_ANSWER = "Booked DL7, the cheapest flight (285 USD) from SFO to JFK on 2026-12-24. Confirmation XK4F2Q."


class ToolFailed(RuntimeError):
    """What a sample tool raises when a test asks it to fail."""


def record_agent_trace(
    *,
    request: str = AGENT_REQUEST,
    flights: dict[str, Any] | None = None,
    booking: dict[str, Any] | None = None,
    answer: str = AGENT_ANSWER,
    booking_failures: int = 0,
    session_id: str | None = None,
) -> str:
    """Run the sample ``travel_agent`` under MLflow tracing; returns its trace id.

    The shape of an agent: a root span, a node ``agent`` (AGENT span, ``node.id``)
    whose chat model asks for tools and then answers: ``chat`` -> ``search_flights``
    -> ``chat`` -> ``book_flight`` (failing ``booking_failures`` times first, each
    failure retried) -> ``chat``. Model calls are CHAT_MODEL spans with OpenAI-style
    messages and completions; tools are TOOL spans with their arguments and results.
    ``session_id`` puts the trace in a conversation (trace metadata ``mlflow.trace.session``).
    """
    import mlflow
    from mlflow.entities import SpanType

    flights = AGENT_FLIGHTS if flights is None else flights
    booking = AGENT_BOOKING if booking is None else booking
    failures = {"left": booking_failures}

    @mlflow.trace(name="search_flights", span_type=SpanType.TOOL)
    def search_flights(origin: str, destination: str, date: str) -> dict[str, Any]:
        return flights

    @mlflow.trace(name="book_flight", span_type=SpanType.TOOL)
    def book_flight(flight_id: str) -> dict[str, Any]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ToolFailed("payment service timed out")
        return booking

    def chat(messages: list[dict[str, Any]], content: str | None, calls: list[tuple[str, dict[str, Any]]]) -> None:
        with mlflow.start_span(name="chat", span_type=SpanType.CHAT_MODEL) as span:
            span.set_inputs({"model": "gpt-4o-mini", "messages": messages})
            tool_calls = [
                {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                for i, (n, a) in enumerate(calls)
            ]
            message = {"role": "assistant", "content": content, **({"tool_calls": tool_calls} if tool_calls else {})}
            span.set_outputs({"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}]})

    @mlflow.trace(name="node_agent", span_type=SpanType.AGENT, attributes={"node.id": "agent", "node.type": "agent"})
    def agent(request: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": request}]
        search = {"origin": "SFO", "destination": "JFK", "date": "2026-12-24"}
        chat(messages, None, [("search_flights", search)])
        found = search_flights(**search)
        messages.append({"role": "tool", "content": json.dumps(found)})
        cheapest = min(found["flights"], key=lambda f: f["price_usd"])["id"] if found.get("flights") else ""
        result: dict[str, Any] | None = None
        while result is None:
            chat(messages, None, [("book_flight", {"flight_id": cheapest})])
            try:
                result = book_flight(cheapest)
            except ToolFailed as exc:
                messages.append({"role": "tool", "content": f"error: {exc}"})
        messages.append({"role": "tool", "content": json.dumps(result)})
        chat(messages, answer, [])
        return {"answer": answer}

    @mlflow.trace(name="travel_agent", span_type=SpanType.CHAIN)
    def travel_agent(request: str) -> dict[str, Any]:
        if session_id is not None:
            mlflow.update_current_trace(session_id=session_id)
        return agent(request)

    travel_agent(request)
    trace_id = mlflow.get_last_active_trace_id(thread_local=True) or mlflow.get_last_active_trace_id()
    assert trace_id, "MLflow recorded no trace"
    return trace_id
