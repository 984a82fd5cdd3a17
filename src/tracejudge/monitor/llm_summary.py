"""An optional plain-language summary of the failure themes, written by the judges' own LLM client. Off by default.

The summary is a judge as data (:data:`THEMES_SUMMARY`): the themes, worst nodes and error codes go in as fenced
data (the same fencing as every judge prompt), and the reply's rationale is the summary; its score (how serious
the failures look, 0..1 where 1 is fine) is kept beside it.
"""

from __future__ import annotations

from typing import Any

from tracejudge.judges.model import Judge, JudgeInput
from tracejudge.monitor.models import QualitySummary

THEMES_SUMMARY = Judge(
    name="failure_themes_summary",
    description="Summarise recurring quality failures for an engineer",
    prompt=(
        "You review an LLM workflow's quality monitoring. Below: the nodes most often below threshold, the judge "
        "error codes, and phrases that recur in failing judge rationales (with how many rationales contain them).\n"
        "{output}\n"
        "In the rationale, say in at most three sentences what is going wrong and where to look first. "
        "Score 1.0 if nothing needs attention, 0.0 if the workflow is failing badly."
    ),
)


def summary_input(summary: QualitySummary) -> JudgeInput:
    lines = ["nodes most often below threshold:"]
    lines += [f"- {w.node}/{w.judge}: {w.below} of {w.count} below ({w.failure_rate:.0%})" for w in summary.worst_nodes[:8]]
    lines += ["judge error codes:"] + [f"- {code}: {n}" for code, n in summary.error_codes.items()]
    lines += ["recurring phrases in failing rationales:"] + [f'- {t.judge}: "{t.phrase}" ({t.count})' for t in summary.themes[:15]]
    return JudgeInput(output="\n".join(lines))


async def llm_summary(summary: QualitySummary, *, client: Any, model: str) -> tuple[str, float]:
    """(summary text, score) from the LLM; raises the client's ``JudgeError`` on failure."""
    from tracejudge.judges.prompt import render

    rendered = render(THEMES_SUMMARY, summary_input(summary))
    reply = await client.score(model=model, messages=rendered.messages, judge=THEMES_SUMMARY.name)
    return reply.reply.rationale or "", reply.reply.score


def add_llm_summary(summary: QualitySummary) -> QualitySummary:
    """Ask the endpoint in ``TRACEJUDGE_LLM_BASE_URL`` (the judges' settings) and put the text in ``summary.llm_summary``."""
    import asyncio

    from tracejudge.config import Settings
    from tracejudge.judges.client import LLMClient

    settings = Settings.from_env()
    client = LLMClient(base_url=settings.llm_base_url, api_key=settings.require_llm_key())

    async def run() -> tuple[str, float]:
        try:
            return await llm_summary(summary, client=client, model=settings.default_model)
        finally:
            await client.aclose()

    text, _ = asyncio.run(run())
    summary.llm_summary = text
    return summary
