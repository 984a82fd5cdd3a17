"""The building blocks every YAML section shares: the section base (unknown keys are errors) and the score type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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
