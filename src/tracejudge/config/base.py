"""The building blocks every YAML section shares: the section base (unknown keys are errors), the score type, and the
small checks several sections make (seconds greater than 0, a count of 1 or more, a judge listed once)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .errors import FieldProblem, show, unknown_key_message


def _no_bool(value: Any) -> Any:
    """YAML ``true`` is not a number; pydantic would read it as 1."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number (got {show(value)})")
    return value


Score = Annotated[float, BeforeValidator(_no_bool), Field(ge=0.0, le=1.0)]
"""A judge score or threshold: 0 (worst) to 1 (best)."""
_Number = Annotated[float, BeforeValidator(_no_bool)]
_Count = Annotated[int, BeforeValidator(_no_bool)]


def positive_seconds(value: float) -> float:
    """A number of seconds greater than 0 (and finite), else ``ValueError`` saying so.

    >>> positive_seconds(0.5)
    0.5
    """
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a number of seconds greater than 0 (got {show(value)})")
    return value


def at_least_one(value: int) -> int:
    """A whole number, 1 or more, else ``ValueError`` saying so.

    >>> at_least_one(3)
    3
    """
    if value < 1:
        raise ValueError(f"must be a whole number, 1 or more (got {show(value)})")
    return value


_Seconds = Annotated[float, BeforeValidator(_no_bool), AfterValidator(positive_seconds)]
"""A duration in seconds, greater than 0."""
_AtLeastOne = Annotated[int, BeforeValidator(_no_bool), AfterValidator(at_least_one)]
"""A count, 1 or more."""


def no_repeated_judges(refs: Sequence[Any]) -> None:
    """Refuse a list of judge references that names one judge twice, pointing at the second and the first.

    >>> from types import SimpleNamespace as Ref
    >>> no_repeated_judges([Ref(name="coherence"), Ref(name="relevance")])
    >>> no_repeated_judges([Ref(name="coherence"), Ref(name="coherence")])
    Traceback (most recent call last):
    ...
    tracejudge.config.errors.FieldProblem: judge 'coherence' is listed twice (also at [0]); keep one entry
    """
    seen: dict[str, int] = {}
    for index, ref in enumerate(refs):
        if ref.name in seen:
            raise FieldProblem(
                f"judge {ref.name!r} is listed twice (also at [{seen[ref.name]}]); keep one entry",
                loc=(index, "name"),
            )
        seen[ref.name] = index


class _Section(BaseModel):
    """Base of our YAML sections: unknown keys are errors with a did-you-mean;
    ``key:`` left empty (null) means the default."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def _coerce(cls, data: Any) -> Any:
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        data = cls._coerce(data)
        if not isinstance(data, Mapping):
            return data
        allowed = list(cls.model_fields)
        cleaned: dict[Any, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise FieldProblem(f"keys must be text (got {show(key)})", loc=(str(key),))
            if key not in allowed:
                raise FieldProblem(unknown_key_message(key, allowed), loc=(key,))
            field = cls.model_fields[key]
            if value is None and not field.is_required() and field.get_default(call_default_factory=True) is not None:
                continue  # `key:` with nothing after it -> default
            cleaned[key] = value
        return cleaned
