"""The judge data model: what a judge is, what it judges, what it returns.

A judge is data where it can be (:class:`Judge`: a prompt template with
declared variables, a 0..1 score, a direction and a default threshold) and
code where it must be (:class:`CodeJudge`: a plain function). Results follow
section 4.6 of the design document, plus tokens, attempts and the error.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from tracejudge.config.models import TEMPLATE_TOKEN, template_variables
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.fingerprint import fingerprint
from tracejudge.judges.trajectory import Step, ToolCall

#: Template placeholders (``{output}``, ``{inputs.topic}``; ``{{``/``}}`` are literal braces):
#: one definition, shared with the YAML config, so a prompt that loads also renders.
PLACEHOLDER = TEMPLATE_TOKEN
JUDGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


#: Most levels a rubric may have (the logprobs mode reads one digit per level).
MAX_RUBRIC_LEVELS = 9
#: Most replies ``samples`` may ask for per judge call.
MAX_SAMPLES = 10
ScoringMode = Literal["direct", "logprobs"]


class RubricLevel(BaseModel):
    """One anchored level of a rubric: a score and what earns it.

    >>> RubricLevel(score=0.75, description="Relevant, with a little padding.").score
    0.75
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    score: float = Field(ge=0.0, le=1.0)
    description: str = Field(min_length=1)


#: The scale a judge without its own rubric is scored on in ``logprobs`` mode.
DEFAULT_LEVELS: tuple[RubricLevel, ...] = (
    RubricLevel(score=1.0, description="fully meets the criteria"),
    RubricLevel(score=0.75, description="meets the criteria with minor shortcomings"),
    RubricLevel(score=0.5, description="meets the criteria in part"),
    RubricLevel(score=0.25, description="mostly fails the criteria"),
    RubricLevel(score=0.0, description="fails the criteria entirely"),
)


def check_rubric(levels: tuple[RubricLevel, ...], *, where: str) -> tuple[RubricLevel, ...]:
    """A rubric's levels, best score first; 2 to 9 levels with distinct scores.

    >>> [l.score for l in check_rubric((RubricLevel(score=0, description="bad"),
    ...                                 RubricLevel(score=1, description="good")), where="t")]
    [1.0, 0.0]
    """
    if not levels:
        return ()
    if not 2 <= len(levels) <= MAX_RUBRIC_LEVELS:
        raise ValueError(f"{where}: a rubric needs 2 to {MAX_RUBRIC_LEVELS} levels (got {len(levels)})")
    scores = [level.score for level in levels]
    duplicates = sorted({s for s in scores if scores.count(s) > 1})
    if duplicates:
        raise ValueError(f"{where}: rubric levels must have distinct scores; repeated: {duplicates}")
    return tuple(sorted(levels, key=lambda level: -level.score))


class Judge(BaseModel):
    """An LLM judge: a prompt template scored 0..1 by a model.

    ``criteria`` (what to check, what to ignore, edge cases) and ``rubric``
    (anchored levels) are shown to the model before the judged material; the
    model reasons about them, then scores. ``scoring`` and ``samples`` choose
    how the score is read (``None``: the ``execution`` default).

    >>> Judge(name="tone", prompt="Is this polite?\\n{output}", variables=["output"]).variables
    ('output',)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["llm"] = "llm"
    name: str
    description: str = ""
    prompt: str
    variables: tuple[str, ...] = ()
    greater_is_better: bool = True
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    aggregations: tuple[str, ...] = ()
    criteria: str = ""
    rubric: tuple[RubricLevel, ...] = ()
    scoring: ScoringMode | None = None
    samples: int | None = None

    @model_validator(mode="after")
    def _check(self) -> "Judge":
        if not JUDGE_NAME.match(self.name):
            raise ValueError(f"judge name {self.name!r} must match {JUDGE_NAME.pattern}")
        if self.samples is not None and not 1 <= self.samples <= MAX_SAMPLES:
            raise ValueError(f"judge {self.name!r}: samples must be 1 to {MAX_SAMPLES} (got {self.samples})")
        object.__setattr__(self, "rubric", check_rubric(self.rubric, where=f"judge {self.name!r}"))
        used = template_variables(self.prompt)
        if not self.variables:
            object.__setattr__(self, "variables", tuple(used))
        undeclared = [v for v in used if v not in self.variables]
        if undeclared:
            raise ValueError(
                f"judge {self.name!r}: template uses undeclared variable(s) {undeclared}; "
                f"declared: {list(self.variables)}"
            )
        return self

    @property
    def version(self) -> str:
        """A short hash of what changes the judge's meaning (for idempotency keys)."""
        blob = json.dumps(
            [
                self.description,
                self.prompt,
                self.greater_is_better,
                self.parameters,
                self.criteria,
                [[level.score, level.description] for level in self.rubric],
                self.scoring,
                self.samples,
                PROMPT_FORMAT_VERSION,
            ],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: Bumped when the system prompt or reply format every LLM judge shares changes meaning
#: (2: criteria and rubric shown, rationale before score), so old results are not reused.
PROMPT_FORMAT_VERSION = 2

CodeJudgeResult = Union[float, tuple[float, str], "JudgeReply"]
CodeJudgeFn = Callable[["JudgeInput"], CodeJudgeResult | Awaitable[CodeJudgeResult]]


class CodeJudge(BaseModel):
    """A judge written as a Python function returning a score (and a rationale).

    Its :attr:`version` covers the function's bytecode, constants, defaults,
    closures and the globals it reads (see :mod:`tracejudge.judges.fingerprint`),
    or is the explicit ``version=`` given (then change it when the logic changes).

    >>> j = CodeJudge(name="short", fn=lambda x: (1.0 if len(x.output_text) < 50 else 0.0, "length"))
    >>> j.kind
    'code'
    >>> CodeJudge(name="pinned", fn=lambda x: 1.0, version="v2").version
    'v2'
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["code"] = "code"
    name: str
    description: str = ""
    fn: Any  # CodeJudgeFn; typed loosely so pydantic does not wrap it
    variables: tuple[str, ...] = ("output",)
    greater_is_better: bool = True
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    model: str | None = None
    aggregations: tuple[str, ...] = ()
    #: An explicit version (``CodeJudge(..., version="v2")``); None: derived from the code.
    pinned_version: str | None = Field(default=None, min_length=1, max_length=64)
    #: What else the version must cover (e.g. an MLflow scorer's configuration).
    depends_on: Any = None
    _version_cache: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _version_keyword(cls, data: Any) -> Any:
        if isinstance(data, dict) and "version" in data:
            data = dict(data)
            data["pinned_version"] = data.pop("version")
        return data

    @model_validator(mode="after")
    def _check(self) -> "CodeJudge":
        if not JUDGE_NAME.match(self.name):
            raise ValueError(f"judge name {self.name!r} must match {JUDGE_NAME.pattern}")
        if not callable(self.fn):
            raise ValueError(f"code judge {self.name!r}: fn must be callable")
        return self

    @property
    def version(self) -> str:
        """The explicit version, else a fingerprint of the code and what it reads (cached)."""
        if self.pinned_version is not None:
            return self.pinned_version
        if self._version_cache is None:
            self._version_cache = fingerprint([self.fn, self.greater_is_better], declared=self.depends_on)
        return self._version_cache


AnyJudge = Judge | CodeJudge


class JudgeInput(BaseModel):
    """What one target offers its judges: output, input, context, expected answer, metadata.

    ``inputs`` holds the raw input fields so templates can name any of them,
    by name (``{topic}``) or by path (``{inputs.request.topic}``). ``tool_calls``
    and ``trajectory`` are what an agent did under the target (``{tool_calls}``,
    ``{trajectory}``; see :mod:`tracejudge.judges.trajectory`).
    """

    model_config = ConfigDict(extra="forbid")

    target: str = "workflow"
    span_id: str | None = None
    output: Any = None
    input: Any = None
    context: list[Any] = Field(default_factory=list)
    expected: Any = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    trajectory: list[Step] = Field(default_factory=list)

    @property
    def output_text(self) -> str:
        return to_text(self.output)


def to_text(value: Any) -> str:
    """Text a judge can read: strings as they are, everything else as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class JudgeReply(BaseModel):
    """The JSON object a judge model must answer with: its reasoning first, then the score."""

    model_config = ConfigDict(extra="ignore")

    rationale: str = ""
    score: float = Field(ge=0.0, le=1.0)


class TokenUsage(BaseModel):
    prompt: int = 0
    completion: int = 0


class ErrorInfo(BaseModel):
    """Why a judge produced no score: a stable code (``type``) and a message."""

    type: str
    message: str


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JudgeResult(BaseModel):
    """One judge on one target (design section 4.6, plus tokens, attempts and error)."""

    name: str
    target: str = "workflow"
    span_id: str | None = None
    score: float | None = None
    threshold: float
    passed: bool = False
    greater_is_better: bool = True
    rationale: str | None = None
    model: str | None = None
    judge_version: str | None = None
    #: How the score was read: "direct" (the reply's score) or "logprobs" (probability-weighted levels).
    scoring: str | None = None
    #: Why the requested scoring mode was not used (e.g. the endpoint returned no logprobs).
    scoring_fallback: str | None = None
    #: Replies averaged into the score (``samples``), and their spread.
    samples: int = 1
    score_stdev: float | None = None
    duration_ms: float = 0.0
    timestamp: str = Field(default_factory=utc_now)
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    attempts: int = 0
    error: ErrorInfo | None = None
    truncated: dict[str, int] = Field(default_factory=dict)
    key: str | None = None
    #: USD this result cost (None when the model has no price; 0 for a cached reply).
    cost_usd: float | None = None
    #: The reply came from the judge result cache (``cache_key``), not from a new LLM call.
    cached: bool = False
    cache_key: str | None = None
    #: More assessment metadata (strings) to write with the result, e.g. a session's id and turns judged.
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None

    @property
    def quality(self) -> float | None:
        """The score on the 'higher is better' scale used for means and bands."""
        if self.score is None:
            return None
        return self.score if self.greater_is_better else 1.0 - self.score

    @classmethod
    def failed(cls, error: JudgeError, **fields: Any) -> "JudgeResult":
        fields.setdefault("attempts", error.attempts)
        if getattr(error, "tokens", None) is not None:
            fields.setdefault("tokens", error.tokens)
        return cls(error=ErrorInfo(type=error.code, message=error.message), passed=False, score=None, **fields)


def passes(score: float, threshold: float, *, greater_is_better: bool = True) -> bool:
    """Whether a score meets its threshold (at most the threshold when lower is better)."""
    return score >= threshold if greater_is_better else score <= threshold


class Aggregate(BaseModel):
    """Summary of several judge results (design section 4.6 ``aggregate``)."""

    mean_score: float | None
    min_score: float | None
    all_passed: bool
    count: int
    errors: int = 0
    variance: float | None = None


def aggregate(results: list[JudgeResult], *, variance: bool = False) -> Aggregate:
    """Mean and min over the scored results (quality scale); all_passed is False if any failed or errored.

    >>> r = [JudgeResult(name="a", score=0.9, threshold=0.8, passed=True),
    ...      JudgeResult(name="b", score=0.7, threshold=0.8, passed=False)]
    >>> aggregate(r).mean_score, aggregate(r).all_passed
    (0.8, False)
    """
    scores = [r.quality for r in results if r.quality is not None]
    errors = sum(1 for r in results if r.error is not None)
    return Aggregate(
        mean_score=round(statistics.fmean(scores), 6) if scores else None,
        min_score=min(scores) if scores else None,
        all_passed=bool(results) and errors == 0 and all(r.passed for r in results),
        count=len(results),
        errors=errors,
        variance=(round(statistics.pvariance(scores), 6) if variance and len(scores) > 1 else (0.0 if variance and scores else None)),
    )


#: Section 5.2 of the design document: lower bound of each band, best first.
QUALITY_BANDS: tuple[tuple[float, str], ...] = (
    (0.9, "Excellent"),
    (0.8, "Good"),
    (0.7, "Acceptable"),
    (0.6, "Needs improvement"),
    (0.0, "Unacceptable"),
)


def quality_band(score: float | None) -> str | None:
    """The design's quality band for a 0..1 score.

    >>> quality_band(0.93), quality_band(0.85), quality_band(0.55)
    ('Excellent', 'Good', 'Unacceptable')
    """
    if score is None:
        return None
    for lower, name in QUALITY_BANDS:
        if score >= lower:
            return name
    return QUALITY_BANDS[-1][1]
