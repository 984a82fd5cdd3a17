"""Turn a trace's spans into what an agent did: its tool calls and its steps, in order.

:class:`SpanTree` indexes a trace's spans once; ``tool_calls(span_id)`` and
``trajectory(span_id)`` then read the subtree under any span (``None``: the
whole trace) in execution order (depth first, siblings by start time). The
reader uses it for every target's ``{tool_calls}`` and ``{trajectory}``, from
the trace it already loaded: no extra MLflow call.

What counts:

* a tool call is a span of type TOOL or RETRIEVER, or one named ``tool_<name>``
  (design section 2.3); its name is the ``tool.name`` attribute, else the span
  name without the ``tool_`` prefix; arguments are the span's inputs, the result
  its outputs, the error the span's status message (or its exception event);
* a step is an LLM call (span type LLM or CHAT_MODEL), a tool call, or a
  sub-node (a node span, or an AGENT span); other spans (chains, parsers) are
  not steps, but the steps inside them are;
* a retry is a call of the same tool right after a failed call of it.

>>> SpanTree([]).tool_calls()
[]
"""

from __future__ import annotations

from typing import Any

from tracejudge.judges.trajectory import Step, ToolCall

NODE_PREFIX = "node_"
NODE_ID_ATTRIBUTE = "node.id"
CONTEXT_SPAN_TYPES = frozenset({"TOOL", "RETRIEVER"})
LLM_SPAN_TYPES = frozenset({"LLM", "CHAT_MODEL"})
TOOL_PREFIX = "tool_"
TOOL_NAME_ATTRIBUTE = "tool.name"


def node_id(span: Any) -> str | None:
    """The node a span stands for (its ``node.id`` attribute, or its name after ``node_``), if any."""
    attributes = span.attributes or {}
    if attributes.get(NODE_ID_ATTRIBUTE):
        return str(attributes[NODE_ID_ATTRIBUTE])
    if span.name and span.name.startswith(NODE_PREFIX) and len(span.name) > len(NODE_PREFIX):
        return span.name[len(NODE_PREFIX):]
    return None


def is_tool_span(span: Any) -> bool:
    """A TOOL or RETRIEVER span, or one named ``tool_<name>``."""
    kind = str(span.span_type or "").upper()
    return kind in CONTEXT_SPAN_TYPES or (span.name or "").startswith(TOOL_PREFIX)


class SpanTree:
    """A trace's spans indexed by parent, for reading what happened under any span."""

    def __init__(self, spans: list[Any]):
        self.spans = list(spans)
        self.by_id = {span.span_id: span for span in self.spans}
        self.children: dict[str | None, list[Any]] = {}
        for span in self.spans:
            # an orphan (its parent was not exported) counts as top level
            parent = span.parent_id if span.parent_id in self.by_id else None
            self.children.setdefault(parent, []).append(span)
        for siblings in self.children.values():
            siblings.sort(key=lambda s: s.start_time_ns or 0)

    @property
    def root(self) -> Any:
        for span in self.spans:
            if span.parent_id is None:
                return span
        return self.spans[0] if self.spans else None

    def walk(self, span_id: str | None = None) -> list[tuple[Any, int, str | None]]:
        """``(span, depth, enclosing node id)`` for every span under ``span_id``, in execution order."""
        out: list[tuple[Any, int, str | None]] = []
        if span_id is None:
            start = [(s, 0, None) for s in reversed(self.children.get(None, []))]
        else:
            owner = node_id(self.by_id[span_id]) if span_id in self.by_id else None
            start = [(s, 0, owner) for s in reversed(self.children.get(span_id, []))]
        stack = start
        while stack:
            span, depth, node = stack.pop()
            out.append((span, depth, node))
            inner = node_id(span) or node
            stack.extend((child, depth + 1, inner) for child in reversed(self.children.get(span.span_id, [])))
        return out

    def tool_calls(self, span_id: str | None = None) -> list[ToolCall]:
        """The tool and retriever calls under ``span_id`` (None: the whole trace), in order.

        Built with ``model_construct``: every field is set here from span data of known types, so
        validation would only cost the worker CPU on every trace (measured in ``bench/agent_extract.py``).
        """
        calls: list[ToolCall] = []
        last_failed: dict[str, bool] = {}
        for span, _depth, node in self.walk(span_id):
            if not is_tool_span(span):
                continue
            name = tool_name(span)
            status, error = span_status(span)
            call = ToolCall.model_construct(
                name=name,
                kind="retriever" if str(span.span_type or "").upper() == "RETRIEVER" else "tool",
                arguments=span.inputs,
                result=span.outputs,
                error=error,
                status=status,
                duration_ms=duration_ms(span),
                node=node_id(span) or node,
                span_id=span.span_id,
                retry=last_failed.get(name, False),
            )
            last_failed[name] = call.failed
            calls.append(call)
        return calls

    def trajectory(self, span_id: str | None = None) -> list[Step]:
        """The LLM calls, tool calls and sub-nodes under ``span_id``, in order, nested by depth."""
        steps: list[Step] = []
        depth_of: dict[str, int] = {}
        for span, _depth, _node in self.walk(span_id):
            parent_depth = self._step_depth(span, depth_of, span_id)
            kind = step_kind(span)
            if kind is None:
                continue
            status, error = span_status(span)
            llm = kind == "llm"
            steps.append(
                Step.model_construct(
                    kind=kind,
                    name=(tool_name(span) if kind in ("tool", "retriever") else node_id(span) or span.name or "?"),
                    input=summarise_llm_input(span.inputs) if llm else span.inputs,
                    output=summarise_llm_output(span.outputs) if llm else span.outputs,
                    error=error,
                    status=status,
                    duration_ms=duration_ms(span),
                    depth=parent_depth,
                    span_id=span.span_id,
                )
            )
            depth_of[span.span_id] = parent_depth + 1
        return steps

    def _step_depth(self, span: Any, depth_of: dict[str, int], top: str | None) -> int:
        """How many steps enclose ``span`` (below ``top``)."""
        parent = span.parent_id
        while parent is not None and parent != top and parent in self.by_id:
            if parent in depth_of:
                return depth_of[parent]
            parent = self.by_id[parent].parent_id
        return 0


def step_kind(span: Any) -> str | None:
    kind = str(span.span_type or "").upper()
    if is_tool_span(span):
        return "retriever" if kind == "RETRIEVER" else "tool"
    if kind in LLM_SPAN_TYPES:
        return "llm"
    if node_id(span) is not None or kind == "AGENT":
        return "node"
    return None


def tool_name(span: Any) -> str:
    attributes = span.attributes or {}
    if attributes.get(TOOL_NAME_ATTRIBUTE):
        return str(attributes[TOOL_NAME_ATTRIBUTE])
    name = span.name or "?"
    return name[len(TOOL_PREFIX):] if name.startswith(TOOL_PREFIX) and len(name) > len(TOOL_PREFIX) else name


def span_status(span: Any) -> tuple[str, str | None]:
    """``("OK" | "ERROR" | "UNSET", error message or None)``."""
    status = getattr(span, "status", None)
    code = getattr(getattr(status, "status_code", None), "value", None) or str(getattr(status, "status_code", "") or "")
    code = code.split(".")[-1].upper() or "UNSET"
    if code not in ("OK", "ERROR", "UNSET"):
        code = "UNSET"
    if code != "ERROR":
        return code, None
    message = (getattr(status, "description", None) or "").strip()
    if not message:
        for event in getattr(span, "events", None) or []:
            if event.name == "exception":
                attrs = event.attributes or {}
                message = f"{attrs.get('exception.type', 'Error')}: {attrs.get('exception.message', '')}".strip()
                break
    return "ERROR", message or "failed (no message recorded)"


def duration_ms(span: Any) -> float | None:
    start, end = span.start_time_ns, span.end_time_ns
    if not start or not end or end < start:
        return None
    return round((end - start) / 1e6, 3)


def summarise_llm_input(inputs: Any) -> Any:
    """An LLM call's input as its last message (what the model was answering), else as it is."""
    messages = inputs.get("messages") if isinstance(inputs, dict) else None
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict):
            return {"role": last.get("role"), "content": last.get("content"), "messages": len(messages)}
    return inputs


def summarise_llm_output(outputs: Any) -> Any:
    """An OpenAI-style completion as its message text and the tool calls it asked for, else as it is."""
    choices = outputs.get("choices") if isinstance(outputs, dict) else None
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        return outputs
    message = choices[0].get("message") or {}
    summary: dict[str, Any] = {"content": message.get("content")}
    requested = [
        {"tool": (c.get("function") or {}).get("name"), "arguments": (c.get("function") or {}).get("arguments")}
        for c in message.get("tool_calls") or []
        if isinstance(c, dict)
    ]
    if requested:
        summary["tool_calls"] = requested
    return summary
