"""Configuration errors that say where the problem is and how to fix it.

A mistake in a user's config must be fixable from the message alone, so every
problem becomes one :class:`ConfigError` naming the file, the path inside the
document and what is allowed. This module also turns pydantic's validation
errors into such plain sentences and holds the small did-you-mean helper, so
that the models and the loader word things the same way.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

__all__ = ["ConfigError", "FieldProblem", "format_path", "suggest", "unknown_key_message"]


class ConfigError(ValueError):
    """A config problem: where it is (``source``, ``path``) and what is wrong (``problem``).

    >>> str(ConfigError("must be between 0 and 1 (got 1.5)", source="cfg.yaml",
    ...                 path="quality_gate.threshold"))
    'cfg.yaml: quality_gate.threshold: must be between 0 and 1 (got 1.5)'

    ``line``/``column`` (1-based) are set for YAML syntax errors. When pydantic
    found several problems at once, the first is this error and the rest are in
    ``additional``.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        additional: Sequence[ConfigError] = (),
    ) -> None:
        self.problem = problem
        self.source = source
        self.path = path
        self.line = line
        self.column = column
        self.additional = tuple(additional)
        # args holds the whole message, so ConfigError(*err.args) (as Celery
        # rebuilds exceptions) still reads well.
        super().__init__(self._render())

    def _render(self) -> str:
        return ": ".join(part for part in (self.source, self.path, self.problem) if part is not None)

    def __str__(self) -> str:
        return self._render()


class FieldProblem(ValueError):
    """A validator's error that points below the value being validated.

    Raised inside models; ``loc`` is appended to pydantic's location, so a
    duplicate found while checking a whole list can name the offending item.

    >>> FieldProblem("duplicate name 'x'", loc=(2, "name")).loc
    (2, 'name')
    """

    def __init__(self, message: str, *, loc: Iterable[str | int] = ()) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


def format_path(parts: Iterable[str | int]) -> str:
    """Join location parts the way users read them.

    >>> format_path(["judges", "node_overrides", "research", 1, "threshold"])
    'judges.node_overrides.research[1].threshold'
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def suggest(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The closest of ``choices`` to ``word``, or None when nothing is close.

    >>> suggest("threshhold", ["name", "threshold", "model"])
    'threshold'
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def unknown_key_message(key: str, allowed: Sequence[str]) -> str:
    """Message for a key the section does not have, with a did-you-mean.

    >>> unknown_key_message("threshhold", ["name", "threshold"])
    "unknown key 'threshhold'; did you mean 'threshold'?"
    """
    close = suggest(key, allowed)
    if close is not None:
        return f"unknown key {key!r}; did you mean {close!r}?"
    return f"unknown key {key!r}; allowed keys: {', '.join(allowed)}"


def show(value: Any) -> str:
    """Short, YAML-flavoured rendering of a user's value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return repr(text)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # validators see 0.0 where the user wrote 0
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _choices(expected: str) -> str:
    """``"'a', 'b' or 'c'"`` (pydantic's wording) -> ``"a, b, c"``."""
    names = re.findall(r"'([^']*)'", expected)
    return ", ".join(names) if names else expected


_TYPE_WORDS = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def describe(error: Mapping[str, Any]) -> str:
    """Plain words for one pydantic error dict (from ``ValidationError.errors()``)."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    got = show(error.get("input"))
    if kind == "value_error" and isinstance(ctx.get("error"), Exception):
        return str(ctx["error"])
    if kind in ("greater_than_equal", "less_than_equal") and (ctx.get("ge") == 0 or ctx.get("le") == 1):
        return f"must be between 0 and 1 (got {got})"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')} (got {got})"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')} (got {got})"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')} (got {got})"
    if kind == "literal_error":
        message = f"must be one of {_choices(str(ctx.get('expected', '')))} (got {got})"
        if error.get("input") is False:
            message += "; YAML reads off/no as false, quote the word you meant"
        return message
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]} (got {got})"
    return f"{error.get('msg', 'invalid value')} (got {got})"


def from_validation_error(
    exc: ValidationError,
    *,
    source: str | None,
    locations: Mapping[str, str] | None = None,
) -> ConfigError:
    """Turn a pydantic ValidationError into a ConfigError at the user's path.

    ``locations`` maps the first location part (``"quality_gate"``) to where
    that section sits in the user's document (``"observability.mlflow.quality_gate"``).
    """
    found: list[ConfigError] = []
    for error in exc.errors(include_url=False):
        loc: list[str | int] = list(error.get("loc", ()))
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            loc.extend(cause.loc)
        if loc and locations and isinstance(loc[0], str) and loc[0] in locations:
            head = locations[loc[0]]
            path = format_path(loc[1:])
            path = head + (path if path.startswith("[") or not path else "." + path)
        else:
            path = format_path(loc)
        found.append(ConfigError(describe(error), source=source, path=path or None))
    first = found[0]
    return ConfigError(first.problem, source=first.source, path=first.path, additional=found[1:])
