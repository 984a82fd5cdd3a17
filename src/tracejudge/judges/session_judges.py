"""Judges of whole conversations: the turns of one session, and the built-in session judges as data.

A session is the traces that share MLflow's session id (``mlflow.trace.session``), oldest
first; each trace is one turn (the user's input and the assistant's answer, and the tools
it called). :func:`conversation_input` turns the turns into the :class:`JudgeInput` a
session judge reads:

* ``{conversation}``: the ordered turns, ``[turn 1] user: ... / assistant: ...``;
* ``{conversation_tool_calls}``: each turn's tool calls, in order (name, arguments, result or error);
* ``{input}`` / ``{output}``: the last turn's user input and answer; ``{session_id}``, ``{turns}``.

The three built-ins follow the ideas of MLflow's session scorers (``ConversationCompleteness``,
``UserFrustration``, ``KnowledgeRetention``: list the user's requests and check each was
answered by the end; frustration judged on the user's own words, resolved only if the user
says so; the user's earlier facts neither contradicted nor forgotten), written as our judges
are (criteria, five anchored levels, reasoning before a 0..1 score); the wording is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tracejudge.judges.builtin import _levels
from tracejudge.judges.model import Judge, JudgeInput, to_text
from tracejudge.judges.prompt import DEFAULT_MAX_INPUT_CHARS
from tracejudge.judges.trajectory import ToolCall, render_tool_calls

#: The target name of session results (the ``node_id`` in their metadata).
SESSION_TARGET = "session"
#: The variables only a conversation has: a judge using one of them is a session judge.
SESSION_VARIABLES = frozenset({"conversation", "conversation_tool_calls"})


class Turn(BaseModel):
    """One turn of a conversation: one trace's user input, answer and tool calls.

    >>> Turn(trace_id="tr-1", user="Hi", assistant="Hello!").assistant
    'Hello!'
    """

    model_config = ConfigDict(extra="forbid")

    trace_id: str
    user: Any = None
    assistant: Any = None
    #: The turn's tool and retriever calls, in order (``mlflow_io.trajectory.SpanTree.tool_calls``).
    tool_calls: list[ToolCall] = Field(default_factory=list)
    timestamp_ms: int = 0


def conversation_text(turns: Sequence[Turn]) -> str:
    """The ordered turns as text, one block per turn.

    >>> print(conversation_text([Turn(trace_id="a", user="Hi", assistant="Hello"), Turn(trace_id="b", user="Bye")]))
    [turn 1]
    user: Hi
    assistant: Hello
    <BLANKLINE>
    [turn 2]
    user: Bye
    assistant: (no answer)
    """
    blocks = []
    for number, turn in enumerate(turns, start=1):
        user = to_text(turn.user).strip() or "(no input)"
        assistant = to_text(turn.assistant).strip() or "(no answer)"
        blocks.append(f"[turn {number}]\nuser: {user}\nassistant: {assistant}")
    return "\n\n".join(blocks)


def tool_calls_text(turns: Sequence[Turn], *, budget: int = DEFAULT_MAX_INPUT_CHARS) -> str:
    """Each turn's tool calls, in order, one compact JSON line per call (``{tool_calls}``'s form), the
    budget shared out between the turns so every turn stays in view.

    >>> print(tool_calls_text([Turn(trace_id="a", tool_calls=[ToolCall(name="search", arguments={"q": "x"}, result=[1])]),
    ...                        Turn(trace_id="b")]))
    [turn 1]
    {"call": 1, "tool": "search", "arguments": {"q": "x"}, "result": [1], "status": "OK"}
    <BLANKLINE>
    [turn 2]
    (no tool calls)
    """
    share = max(200, budget // max(1, len(turns)))
    blocks = []
    for number, turn in enumerate(turns, start=1):
        text = render_tool_calls(turn.tool_calls, budget=share)[0] if turn.tool_calls else "(no tool calls)"
        blocks.append(f"[turn {number}]\n{text}")
    return "\n\n".join(blocks)


def conversation_input(session_id: str, turns: Sequence[Turn], *, max_chars: int = DEFAULT_MAX_INPUT_CHARS) -> JudgeInput:
    """What a session judge reads (see the module docstring).

    >>> x = conversation_input("s-1", [Turn(trace_id="a", user="Hi", assistant="Hello")])
    >>> x.target, x.inputs["turns"], x.output
    ('session', 1, 'Hello')
    """
    last = turns[-1] if turns else None
    return JudgeInput(
        target=SESSION_TARGET,
        span_id=None,
        input=last.user if last else None,
        output=last.assistant if last else None,
        inputs={
            "conversation": conversation_text(turns),
            "conversation_tool_calls": tool_calls_text(turns, budget=max_chars),
            "session_id": session_id,
            "turns": len(turns),
        },
    )


def is_session_judge(judge: Any) -> bool:
    """Whether a judge reads a whole conversation (its template uses ``{conversation...}``)."""
    return bool(SESSION_VARIABLES & set(getattr(judge, "variables", ()) or ()))


CONVERSATION_COMPLETENESS = Judge(
    name="conversation_completeness",
    description="Assesses whether the assistant addressed every request the user made, by the end of the conversation.",
    criteria="""First list every explicit request or question the user made in any turn; then, for each, find the assistant's explicit answer anywhere in the conversation, quoting it in your reasoning.
- A request counts as addressed only when an assistant turn explicitly answers or fulfils it; an answer that can only be inferred does not count.
- A request may be answered in a later turn than the one it was made in; what counts is the state at the end of the conversation.
- A refusal counts as addressed only when the assistant explains why it cannot do it.
- Do not assume completeness because the user seems satisfied, and do not judge whether the answers are correct or well written: only whether each request was addressed.
- A request the user withdrew or replaced with another no longer needs an answer; the replacement does.
- A conversation whose assistant turns are all empty scores 0.0.""",
    rubric=_levels(
        "Every user request is explicitly addressed by the end of the conversation.",
        "Every request is addressed, but one only in part or thinly.",
        "Most requests are addressed, but one that mattered to the user is left unanswered.",
        "Only a minority of the user's requests are addressed.",
        "None of the user's requests is addressed, or the assistant never answered.",
    ),
    prompt="""Evaluate whether the assistant addressed all of the user's requests by the end of this conversation.

Conversation (oldest turn first):
{conversation}""",
)

USER_FRUSTRATION = Judge(
    name="user_frustration",
    description="Detects user frustration over the conversation. The score is the user's ease: 1 = never frustrated.",
    criteria="""Follow the user's emotional trajectory turn by turn, from the user's own words only: explicit complaints, repeated or rephrased requests, corrections of the assistant ("no, I said..."), sarcasm, short angry replies, threats to leave or asking for a human.
- Judge the user's frustration with the assistant, not with their own problem (a user annoyed at a broken printer, but not at the assistant, is not frustrated with it).
- Frustration is resolved only when the user's own last turns show satisfaction, relief or acceptance; do not assume it is resolved because the assistant's last answer is helpful or polite.
- A user who leaves right after a frustrated turn, with nothing else said, counts as unresolved.
- Do not use outside assumptions about how the user felt; base the judgement on explicit or strongly implied signals.
- A conversation with no user turns scores 1.0 (no frustration expressed).""",
    rubric=_levels(
        "The user never shows frustration with the assistant.",
        "Mild, passing annoyance (one correction or rephrasing), and the user ends satisfied.",
        "Clear frustration at some point, resolved: the user's own last turns show satisfaction or acceptance.",
        "Frustration near the end, or the user leaves without any sign of satisfaction.",
        "Strong or growing frustration that is still unresolved at the end (complaints, repeated failures, giving up).",
    ),
    prompt="""Evaluate whether the user became frustrated with the assistant during this conversation, and whether that was resolved.

Conversation (oldest turn first):
{conversation}""",
)

KNOWLEDGE_RETENTION = Judge(
    name="knowledge_retention",
    description="Assesses whether the assistant keeps and correctly uses what the user told it in earlier turns.",
    criteria="""List the facts the user gave in earlier turns (names, dates, numbers, preferences, constraints, context); then check every later assistant turn against them.
- Only information the user provided counts: not the assistant's own earlier statements, not outside knowledge.
- A later answer must not contradict or distort what the user said, and must use it where it is directly relevant to the question asked (a user who said they are vegetarian should not be offered a steak recipe).
- Not every fact needs to be repeated: leaving out information that is irrelevant to the current question is fine.
- Asking again for something the user already said counts as forgetting it.
- Judge retention only: not the answers' general correctness, tone or completeness.
- A single-turn conversation has nothing earlier to retain: score 1.0 unless the answer contradicts what the user said in that same turn.""",
    rubric=_levels(
        "Every later answer is consistent with what the user said and uses it wherever it is relevant.",
        "Consistent throughout; one minor detail is recalled loosely or left unused where it would have helped a little.",
        "One relevant fact is forgotten (asked for again or ignored where it mattered), but nothing is contradicted.",
        "An answer contradicts or distorts a fact the user gave, or several relevant facts are forgotten.",
        "Answers repeatedly contradict or ignore what the user said, as if the earlier turns never happened.",
    ),
    prompt="""Evaluate whether the assistant retains and correctly uses the information the user gave in earlier turns.

Conversation (oldest turn first):
{conversation}""",
)

SESSION_JUDGES: dict[str, Judge] = {
    judge.name: judge for judge in (CONVERSATION_COMPLETENESS, USER_FRUSTRATION, KNOWLEDGE_RETENTION)
}
