"""The config's JSON Schema and what each key means, read from the pydantic models.

A key's description is the ``#:`` comment above its field (or, for a section, its class docstring), so the
docs' configuration reference, the JSON Schema editors use and the code say the same thing.

>>> config_schema()["properties"]["quality_gate"]["anyOf"][0]["$ref"]
'#/$defs/QualityGateConfig'
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

__all__ = ["INTERNAL_FIELDS", "SCHEMA_ID", "config_schema", "describe_field", "field_comments", "iter_config_keys"]

#: Fields the loader sets; not something a user writes.
INTERNAL_FIELDS = frozenset({"unused_keys", "misspelt_keys", "source"})
SCHEMA_ID = "https://tracejudge.dev/tracejudge.schema.json"


# ---------------------------------------------------------------- field descriptions


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``#:`` comment lines right above each field of ``model``'s class body, joined."""
    try:
        lines, start = inspect.getsourcelines(model)
    except (OSError, TypeError):  # pragma: no cover - no source (frozen app)
        return {}
    tree = ast.parse(textwrap.dedent("".join(lines)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found: dict[str, str] = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#:"):
                above.insert(0, lines[index].strip()[2:].strip())
                index -= 1
            if above:
                found[node.target.id] = " ".join(above)
    return found


def describe_field(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.description:
        return field.description
    for klass in model.__mro__:
        if isinstance(klass, type) and issubclass(klass, BaseModel) and name in getattr(klass, "__annotations__", {}):
            text = field_comments(klass).get(name)
            if text:
                return _markdown(text)
    nested = _nested(field.annotation)
    if nested and nested[1].__doc__:  # a section: its class docstring's first sentence
        return " ".join(nested[1].__doc__.strip().split("\n\n")[0].split())
    return ""


def _markdown(text: str) -> str:
    """reST inline literals (``x``) as markdown ones (`x`)."""
    return text.replace("``", "`")


# ---------------------------------------------------------------- walking the models


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        key, value = get_args(annotation) or (str, Any)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    if _is_model(annotation):
        return "section"
    return {str: "text", int: "integer", float: "number", bool: "true/false", Any: "any"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _nested(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """(path suffix, model) where a field holds a section, a list of sections or a mapping of them."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            found = _nested(arg)
            if found:
                return found
        return None
    if _is_model(annotation):
        return "", annotation
    if origin in (list, tuple):
        inner = _nested(get_args(annotation)[0])
        return ("[]" + inner[0], inner[1]) if inner else None
    if origin is dict:
        inner = _nested(get_args(annotation)[1])
        return (".<name>" + inner[0], inner[1]) if inner else None
    return None


def iter_config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[tuple[str, type[BaseModel], str]]:
    """Every key a user can write: (YAML path, model that holds it, field name), depth first."""
    from .models import TraceJudgeConfig

    model = model or TraceJudgeConfig
    for name in model.model_fields:
        if model is TraceJudgeConfig and name in INTERNAL_FIELDS:
            continue
        path = f"{prefix}.{name}" if prefix else name
        yield path, model, name
        nested = _nested(model.model_fields[name].annotation)
        if nested:
            yield from iter_config_keys(nested[1], path + nested[0])


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a whole YAML config file, as users lay it out (the design's layout).

    >>> config_schema()["properties"]["quality_gate"]["$ref"]
    '#/$defs/QualityGateConfig'
    """
    from .models import TraceJudgeConfig

    schema = TraceJudgeConfig.model_json_schema()
    defs = schema.pop("$defs", {})
    for _path, model, name in iter_config_keys():  # the `#:` comments, for editors' hover help
        holder = schema if model is TraceJudgeConfig else defs.get(model.__name__)
        prop = (holder or {}).get("properties", {}).get(name)
        if prop is not None and describe_field(model, name):
            prop["description"] = describe_field(model, name)
    props = {k: v for k, v in schema["properties"].items() if k not in INTERNAL_FIELDS}
    for model_schema in [*defs.values(), {"properties": props, "required": []}]:
        required = set(model_schema.get("required", []))
        for key, prop in list(model_schema.get("properties", {}).items()):
            if key not in required:  # `key:` left empty means the default
                model_schema["properties"][key] = {"anyOf": [prop, {"type": "null"}]} if "anyOf" not in prop else prop
                if "anyOf" in prop and {"type": "null"} not in prop["anyOf"]:
                    prop["anyOf"].append({"type": "null"})
    _json_schema_bounds(defs)
    _json_schema_bounds(props)
    # a judge may be named by a bare string: `- relevance`
    defs["JudgeRef"] = {"anyOf": [{"type": "string"}, defs["JudgeRef"]]}
    movable = ("quality_gate", "quality_retry", "quality_alerts", "optimization")
    mlflow_keys = {k: v for k, v in props.items()}
    root_sections = {k: props[k] for k in movable}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "tracejudge configuration",
        "description": "tracejudge's sections of a workflow config (observability.mlflow.*, quality_gate, "
        "quality_retry, quality_alerts); other keys are the workflow's own.",
        "type": "object",
        "properties": {
            "observability": {
                "type": "object",
                "properties": {
                    "mlflow": {"type": "object", "properties": mlflow_keys, "additionalProperties": True},
                    **root_sections,
                },
                "additionalProperties": True,
            },
            **root_sections,
        },
        "additionalProperties": True,
        "$defs": defs,
    }


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _json_schema_bounds(node: Any) -> None:
    """Pydantic leaves bounds of annotated number types as ``ge``/``le``; JSON Schema names them minimum/maximum."""
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            for ours, theirs in _BOUNDS.items():
                if ours in node:
                    node[theirs] = node.pop(ours)
        for value in node.values():
            _json_schema_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _json_schema_bounds(value)


