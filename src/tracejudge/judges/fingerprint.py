"""A stable fingerprint of Python code and what it depends on, for code judges' versions.

A judge's version is part of the idempotency key: results of an older
version must not be reused. For a function that means more than its
bytecode: the constants in it (``< 2000`` vs ``< 5``), the default
arguments, the values of its closure cells and of the module globals it
reads, and (for a callable object such as an MLflow scorer) its class and
configuration. Values are fingerprinted by their content where that is
stable (numbers, text, containers, pydantic models, functions), by their
type's name otherwise (never by ``repr``, which may carry a memory address).

>>> def limit(x): return x < 2000
>>> def tighter(x): return x < 5
>>> fingerprint(limit) == fingerprint(tighter)
False
"""

from __future__ import annotations

import hashlib
import types
from typing import Any

MAX_DEPTH = 6
MAX_ITEMS = 200

_SCALARS = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))


def fingerprint(obj: Any) -> str:
    """A short hex digest of ``obj``'s code and the values it depends on."""
    digest = hashlib.sha256()
    _feed(digest, obj, depth=0, seen=set())
    return digest.hexdigest()[:12]


def _feed(digest: Any, obj: Any, *, depth: int, seen: set[int]) -> None:
    def put(text: str) -> None:
        digest.update(text.encode("utf-8", "backslashreplace"))
        digest.update(b"\x00")

    if isinstance(obj, _SCALARS):
        put(f"{type(obj).__name__}:{obj!r}")
        return
    if depth > MAX_DEPTH:
        put(f"deep:{_type_name(obj)}")
        return
    if id(obj) in seen:  # recursion (a function that calls itself, a self-referencing dict)
        put(f"seen:{_type_name(obj)}")
        return
    seen = seen | {id(obj)}
    nested = depth + 1
    if isinstance(obj, types.CodeType):
        put(f"code:{obj.co_name}")
        digest.update(obj.co_code)
        put(repr(obj.co_names))
        for const in obj.co_consts:
            _feed(digest, const, depth=nested, seen=seen)
        return
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        fn = obj.__func__ if isinstance(obj, types.MethodType) else obj
        put(f"function:{fn.__module__}.{fn.__qualname__}")
        _feed(digest, fn.__code__, depth=nested, seen=seen)
        _feed(digest, fn.__defaults__, depth=nested, seen=seen)
        _feed(digest, fn.__kwdefaults__, depth=nested, seen=seen)
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                value = None
            _feed(digest, value, depth=nested, seen=seen)
        module_globals = fn.__globals__
        for name in _global_names(fn.__code__):
            if name in module_globals:
                put(f"global:{name}")
                _feed(digest, module_globals[name], depth=nested, seen=seen)
        if isinstance(obj, types.MethodType):
            _feed(digest, obj.__self__, depth=nested, seen=seen)
        return
    if isinstance(obj, types.ModuleType):
        put(f"module:{obj.__name__}")
        return
    if isinstance(obj, type):
        put(f"class:{obj.__module__}.{obj.__qualname__}")
        return
    if isinstance(obj, (tuple, list, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else list(obj)
        put(f"{type(obj).__name__}:{len(items)}")
        for item in items[:MAX_ITEMS]:
            _feed(digest, item, depth=nested, seen=seen)
        return
    if isinstance(obj, dict):
        put(f"dict:{len(obj)}")
        for key in sorted(obj, key=repr)[:MAX_ITEMS]:
            _feed(digest, key, depth=nested, seen=seen)
            _feed(digest, obj[key], depth=nested, seen=seen)
        return
    if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        put(f"builtin:{getattr(obj, '__module__', '')}.{obj.__qualname__}")
        return
    # Any other object: its class, its code, and its configuration.
    put(f"object:{_type_name(obj)}")
    call = getattr(type(obj), "__call__", None)
    if isinstance(call, types.FunctionType):
        _feed(digest, call, depth=nested, seen=seen)
    dump = getattr(obj, "model_dump", None)  # pydantic models (MLflow scorers are)
    if callable(dump):
        try:
            _feed(digest, dump(), depth=nested, seen=seen)
        except Exception:  # a model that cannot dump itself: its fields' names at least
            put(repr(sorted(getattr(obj, "model_fields", {}))))
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        _feed(digest, {k: v for k, v in state.items() if not k.startswith("__")}, depth=nested, seen=seen)


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
