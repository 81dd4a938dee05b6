"""The schema's fields as the loader and ``docs/CONFIG.md`` read them: type hints, metadata,
dotted keys, and types and values in the words of an error message."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

from detkd.config.schema import Config


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """Type hints of a dataclass's init fields (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def field_meta(cls: type, name: str) -> Mapping[str, Any]:
    """The metadata of field ``name`` of ``cls`` (``help``, ``choices``, ``pattern``, ``bounds``)."""
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def strip_optional(tp: Any) -> Any:
    """``X`` for ``X | None``; ``tp`` unchanged otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"detkd.config: unsupported type hint {tp!r} (only X | None unions)")
        return args[0]
    return tp


def all_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included (``model``, ``model.rpn.nms_thresh``, ...)."""
    keys = []
    for name, tp in field_hints(schema).items():
        key = f"{prefix}{name}"
        keys.append(key)
        inner = strip_optional(tp)
        if dataclasses.is_dataclass(inner):
            keys.extend(all_keys(inner, f"{key}."))
    return keys


def type_name(tp: Any) -> str:
    """A type hint as users read it: ``float``, ``list[int] or null``, ``a mapping (section)``."""
    inner = strip_optional(tp)
    if inner is not tp:
        return f"{type_name(inner)} or null"
    if dataclasses.is_dataclass(inner):
        return "a mapping (section)"
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"dict[str, {type_name(args[1])}]"
    return {bool: "true or false"}.get(inner, getattr(inner, "__name__", str(inner)))


def describe(value: Any) -> str:
    """A value as an error message quotes it: its repr (cut at 60 characters) and its type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})" if value is not None else "null"
