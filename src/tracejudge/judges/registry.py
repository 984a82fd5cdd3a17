"""Where judges are found by name: built-ins, config, Python and installed packages.

Lookup order, later wins: built-ins, judges shipped by installed packages
(entry-point group ``tracejudge.judges``), judges registered from Python
(:func:`register_judge`, :func:`code_judge`), and custom judges defined in
the YAML config (``observability.mlflow.judges.custom``).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from tracejudge.config import CustomJudgeConfig, TraceJudgeConfig
from tracejudge.judges import errors
from tracejudge.judges.builtin import BUILTIN_JUDGES
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.model import AnyJudge, CodeJudge, Judge, RubricLevel
from tracejudge.judges.session_judges import SESSION_JUDGES

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tracejudge.judges"


class UnknownJudgeError(JudgeError, KeyError):
    """A judge name that no built-in, package, Python registration or config defines."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        super().__init__(errors.UNKNOWN_JUDGE, f"unknown judge {name!r}{hint} Known judges: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return Exception.__str__(self)


class JudgeRegistry:
    """A name -> judge table.

    >>> reg = JudgeRegistry()
    >>> reg.get("coherence").name
    'coherence'
    """

    def __init__(self, judges: Iterable[AnyJudge] | None = None, *, builtins: bool = True) -> None:
        self._judges: dict[str, AnyJudge] = {**BUILTIN_JUDGES, **SESSION_JUDGES} if builtins else {}
        for judge in judges or ():
            self.register(judge, replace=True)

    def register(self, judge: AnyJudge, *, replace: bool = False) -> AnyJudge:
        """Add a judge; a second judge of the same name needs ``replace=True`` (built-ins excepted)."""
        if not isinstance(judge, (Judge, CodeJudge)):
            raise TypeError(f"expected a Judge or CodeJudge, got {type(judge).__name__}")
        existing = self._judges.get(judge.name)
        builtin = BUILTIN_JUDGES.get(judge.name) or SESSION_JUDGES.get(judge.name)
        if existing is not None and not replace and existing is not builtin:
            raise ValueError(f"a judge named {judge.name!r} is already registered (pass replace=True)")
        self._judges[judge.name] = judge
        return judge

    def get(self, name: str) -> AnyJudge:
        try:
            return self._judges[name]
        except KeyError:
            raise UnknownJudgeError(name, self._judges) from None

    def names(self) -> set[str]:
        return set(self._judges)

    def __contains__(self, name: object) -> bool:
        return name in self._judges

    def copy(self) -> "JudgeRegistry":
        clone = JudgeRegistry(builtins=False)
        clone._judges = dict(self._judges)
        return clone

    def with_config(self, config: TraceJudgeConfig) -> "JudgeRegistry":
        """A copy that also holds the config's custom judges (they override same-named ones)."""
        if not config.judges.custom:
            return self
        clone = self.copy()
        for custom in config.judges.custom:
            clone.register(judge_from_config(custom), replace=True)
        return clone

    def load_entry_points(self) -> None:
        """Register judges that installed packages ship under ``tracejudge.judges``."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
                items = loaded if isinstance(loaded, (list, tuple)) else [loaded]
                for item in items:
                    self.register(item, replace=True)
            except Exception as exc:  # a broken plugin must not take the worker down
                log.error("could not load judges from entry point %s = %s: %s", ep.name, ep.value, exc)


def judge_from_config(custom: CustomJudgeConfig) -> Judge:
    """The YAML form of the design's ``make_genai_metric`` judges, as a :class:`Judge`."""
    return Judge(
        name=custom.name,
        description=custom.definition,
        prompt=custom.grading_prompt,
        variables=tuple(custom.variables or ()),
        greater_is_better=custom.greater_is_better,
        threshold=custom.threshold,
        model=custom.model,
        parameters=dict(custom.parameters),
        aggregations=tuple(custom.aggregations),
        criteria=custom.criteria,
        rubric=tuple(RubricLevel(score=level.score, description=level.description) for level in custom.rubric),
        scoring=custom.scoring,
        samples=custom.samples,
    )


_default: JudgeRegistry | None = None


def default_registry() -> JudgeRegistry:
    """The process-wide registry: built-ins plus installed packages' judges, loaded once."""
    global _default
    if _default is None:
        _default = JudgeRegistry()
        _default.load_entry_points()
    return _default


def register_judge(judge: AnyJudge, *, replace: bool = True) -> AnyJudge:
    """Make a judge available by name in this process (workers must import the module too).

    >>> register_judge(Judge(name="politeness", prompt="Is this polite? {output}")).name
    'politeness'
    """
    return default_registry().register(judge, replace=replace)


def code_judge(
    name: str | None = None,
    *,
    threshold: float | None = None,
    greater_is_better: bool = True,
    description: str = "",
    variables: tuple[str, ...] = ("output",),
    version: str | None = None,
) -> Callable[[Callable[..., Any]], CodeJudge]:
    """Decorator: register a function ``fn(judge_input) -> score | (score, rationale)`` as a judge.

    Its version follows its code, constants, closures and the globals it reads;
    ``version="..."`` pins it instead.

    >>> @code_judge("not_empty")
    ... def not_empty(x):
    ...     return (1.0, "has text") if x.output_text.strip() else (0.0, "empty")
    >>> not_empty.name
    'not_empty'
    """

    def wrap(fn: Callable[..., Any]) -> CodeJudge:
        judge = CodeJudge(
            name=name or fn.__name__,
            description=description or (fn.__doc__ or "").strip(),
            fn=fn,
            threshold=threshold,
            greater_is_better=greater_is_better,
            variables=variables,
            version=version,
        )
        register_judge(judge)
        return judge

    return wrap
