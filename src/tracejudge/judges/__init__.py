"""The judging core: judge definitions, prompts, the LLM client and the concurrent runner.

Knows no Celery and no MLflow, so it can be tested, reused and benchmarked alone.
"""

from tracejudge.judges.builtin import BUILTIN_JUDGES
from tracejudge.judges.client import LLMClient, parse_reply
from tracejudge.judges.errors import JudgeError, JudgeInputError, JudgeReplyError
from tracejudge.judges.mlflow_scorer import scorer_judge
from tracejudge.judges.model import (
    Aggregate,
    AnyJudge,
    CodeJudge,
    ErrorInfo,
    Judge,
    JudgeInput,
    JudgeReply,
    JudgeResult,
    TokenUsage,
    aggregate,
    quality_band,
)
from tracejudge.judges.plan import WORKFLOW_TARGET, PlannedJudge, plan_for_target
from tracejudge.judges.prompt import RenderedPrompt, render
from tracejudge.judges.registry import (
    JudgeRegistry,
    UnknownJudgeError,
    code_judge,
    default_registry,
    register_judge,
)
from tracejudge.judges.runner import JudgeJob, run_judges
from tracejudge.judges.session_judges import SESSION_JUDGES, Turn, conversation_input

__all__ = [
    "BUILTIN_JUDGES",
    "SESSION_JUDGES",
    "Turn",
    "conversation_input",
    "WORKFLOW_TARGET",
    "Aggregate",
    "AnyJudge",
    "CodeJudge",
    "ErrorInfo",
    "Judge",
    "JudgeError",
    "JudgeInput",
    "JudgeInputError",
    "JudgeJob",
    "JudgeRegistry",
    "JudgeReply",
    "JudgeReplyError",
    "JudgeResult",
    "LLMClient",
    "PlannedJudge",
    "RenderedPrompt",
    "TokenUsage",
    "UnknownJudgeError",
    "aggregate",
    "code_judge",
    "default_registry",
    "parse_reply",
    "plan_for_target",
    "quality_band",
    "register_judge",
    "render",
    "run_judges",
    "scorer_judge",
]
