"""A stable fingerprint of Python code and what it depends on, for code judges' versions.

A judge's version is part of the idempotency key: results of an older
version must not be reused, and every process (two workers, the scanner,
``backfill``) must compute the same version for the same code, or keys,
plan fingerprints and backfill never match. So the fingerprint covers what
is part of the logic and nothing that is the process's runtime state:

* hashed by content: code (bytecode, names, constants, nested code), default
  arguments, closure cells, the module globals a function reads, and plain
  data (numbers, text, bytes, None, bools, and tuples, lists, sets, frozensets
  and dicts of them); a function reached from there is followed into its code;
  a pydantic model (an MLflow scorer, a config) by its dumped fields; a
  ``functools.partial`` by its function and arguments; a compiled regex by
  its pattern and flags;
* by name only: modules, classes, builtins, and every other object (a
  logger, a client, a lock, a cache: its type's qualified name, never its
  ``__dict__`` and never ``repr``, which may carry a memory address). A
  module-level ``log = logging.getLogger(__name__)`` no longer changes the
  version when some other code calls ``getLogger`` (it did: its manager's
  logger dict and level cache were hashed);
* ``declared``: the configuration a judge says it depends on (an MLflow
  scorer object): also its public attributes that hold plain data.

>>> def limit(x): return x < 2000
>>> def tighter(x): return x < 5
>>> fingerprint(limit) == fingerprint(tighter)
False
>>> import logging
>>> log = logging.getLogger("tj.doc")
>>> def judged(x): log.info("judging"); return 1.0
>>> before = fingerprint(judged); logging.getLogger("tj.doc.other").setLevel(logging.DEBUG); log.info("x")
>>> fingerprint(judged) == before
True
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import re
import types
from enum import Enum
from typing import Any

MAX_DEPTH = 6
MAX_ITEMS = 200

_SCALARS = (str, bytes, bool, type(None), type(Ellipsis))


def fingerprint(obj: Any, *, declared: Any = None) -> str:
    """A short hex digest of ``obj``'s code and the values it depends on (see the module docstring).

    ``declared``: objects the caller names as configuration; their public plain-data attributes count too.

    >>> fingerprint((1, "a")) == fingerprint((1, "a")), fingerprint([1]) == fingerprint([2])
    (True, False)
    """
    digest = hashlib.sha256()
    digest.update(_digest(obj, depth=0, seen=frozenset()))
    if declared is not None:
        digest.update(_digest(declared, depth=0, seen=frozenset(), declared=True))
    return digest.hexdigest()[:12]


def is_plain(value: Any, *, depth: int = 0) -> bool:
    """Plain data: numbers, text, bytes, None, bools, and containers (tuple, list, set, frozenset, dict) of them.

    >>> is_plain({"a": (1, 2.5, None)}), is_plain([object()])
    (True, False)
    """
    if isinstance(value, _SCALARS) or isinstance(value, numbers.Number):
        return True
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(is_plain(v, depth=depth + 1) for v in value)
    if isinstance(value, dict):
        return all(is_plain(k, depth=depth + 1) and is_plain(v, depth=depth + 1) for k, v in value.items())
    return False


def _digest(obj: Any, *, depth: int, seen: frozenset[int], declared: bool = False) -> bytes:
    """The digest of one value (containers hash their items' digests, sorted where the order is not data)."""
    digest = hashlib.sha256()

    def put(text: str) -> None:
        digest.update(text.encode("utf-8", "backslashreplace"))
        digest.update(b"\x00")

    def feed(value: Any, *, as_declared: bool = False) -> None:
        digest.update(_digest(value, depth=depth + 1, seen=inner, declared=as_declared))

    if isinstance(obj, _SCALARS) or (isinstance(obj, numbers.Number) and type(obj).__module__ == "builtins"):
        put(f"{type(obj).__name__}:{obj!r}")
        return digest.digest()
    if depth > MAX_DEPTH:
        put(f"deep:{_type_name(obj)}")
        return digest.digest()
    if id(obj) in seen:  # recursion (a function that calls itself, a self-referencing dict)
        put(f"seen:{_type_name(obj)}")
        return digest.digest()
    inner = seen | {id(obj)}
    if isinstance(obj, types.CodeType):
        put(f"code:{obj.co_name}")
        digest.update(obj.co_code)
        put(repr(obj.co_names))
        for const in obj.co_consts:
            feed(const)
    elif isinstance(obj, (types.FunctionType, types.MethodType)):
        fn = obj.__func__ if isinstance(obj, types.MethodType) else obj
        put(f"function:{fn.__module__}.{fn.__qualname__}")
        feed(fn.__code__)
        feed(fn.__defaults__)
        feed(fn.__kwdefaults__)
        for cell in fn.__closure__ or ():
            try:
                feed(cell.cell_contents)
            except ValueError:  # an empty cell
                put("cell:empty")
        module_globals = fn.__globals__
        for name in _global_names(fn.__code__):
            if name in module_globals:
                put(f"global:{name}")
                feed(module_globals[name])
        if isinstance(obj, types.MethodType):
            feed(obj.__self__)
    elif isinstance(obj, types.ModuleType):
        put(f"module:{obj.__name__}")
    elif isinstance(obj, type):
        put(f"class:{obj.__module__}.{obj.__qualname__}")
    elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        put(f"builtin:{getattr(obj, '__module__', '')}.{obj.__qualname__}")
    elif isinstance(obj, numbers.Number):  # Decimal, Fraction, numpy scalars: their value
        put(f"number:{_type_name(obj)}:{obj!r}")
    elif isinstance(obj, (tuple, list)):
        put(f"{type(obj).__name__}:{len(obj)}")
        for item in obj[:MAX_ITEMS]:
            feed(item, as_declared=declared)
    elif isinstance(obj, (set, frozenset)):
        put(f"{type(obj).__name__}:{len(obj)}")
        for item_digest in sorted(_digest(i, depth=depth + 1, seen=inner, declared=declared) for i in obj)[:MAX_ITEMS]:
            digest.update(item_digest)
    elif isinstance(obj, dict):
        put(f"dict:{len(obj)}")
        pairs = sorted(
            _digest(k, depth=depth + 1, seen=inner) + _digest(v, depth=depth + 1, seen=inner, declared=declared)
            for k, v in obj.items()
        )
        for pair in pairs[:MAX_ITEMS]:
            digest.update(pair)
    elif isinstance(obj, Enum):
        put(f"enum:{_type_name(obj)}.{obj.name}")
    elif isinstance(obj, re.Pattern):
        put(f"regex:{obj.flags}")
        feed(obj.pattern)
    elif isinstance(obj, functools.partial):
        put("partial")
        feed(obj.func)
        feed(obj.args)
        feed(obj.keywords)
    else:
        _feed_object(obj, put=put, feed=feed, declared=declared)
    return digest.digest()


def _feed_object(obj: Any, *, put: Any, feed: Any, declared: bool) -> None:
    """Any other object: its type's name, its class's ``__call__`` code, a pydantic model's fields, and
    (only when ``declared``) its public plain-data attributes. Never its runtime state."""
    put(f"object:{_type_name(obj)}")
    call = getattr(type(obj), "__call__", None)
    if isinstance(call, types.FunctionType):
        feed(call)
    dump = getattr(obj, "model_dump", None)  # pydantic models (MLflow scorers are): their configuration
    if callable(dump) and hasattr(type(obj), "model_fields"):
        try:
            feed(dump())
        except Exception:  # a model that cannot dump itself: its fields' names at least
            put(repr(sorted(getattr(type(obj), "model_fields", {}))))
    if declared:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            feed({k: v for k, v in state.items() if not k.startswith("_") and is_plain(v)})


def _global_names(code: types.CodeType) -> list[str]:
    """Names a code object (and the code nested in it) may read as globals."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return sorted(set(names))


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
