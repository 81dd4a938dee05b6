"""Loading a config: a file with its bases (:mod:`detkd.config.layers`) and ``key.sub=value``
overrides, converted to the schema's dataclasses (:mod:`detkd.config.schema`) and checked.

Overrides from the command line win over the files; their values are YAML (``train.lr=0.01``,
``data.classes=[a,b]``, ``model.weights=null``). Unknown keys are errors naming the key, the file
and the closest valid key; wrong types and values outside a key's choices, pattern or bounds are
errors naming the key, the file, what was expected and what was found; checks across a section's
keys (its ``problems()``) name the file that set them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from detkd.config.fields import all_keys, describe, field_hints, field_meta, strip_optional, type_name
from detkd.config.files import find_config
from detkd.config.layers import load_layers, merge, origin_of, record
from detkd.config.schema import DISTILL_SECTIONS, Config, DistillConfig, ModelSection
from detkd.errors import DetkdError

COMMAND_LINE = "command line"
T = typing.TypeVar("T")
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # PyYAML reads 1e-4 as a string


@typing.overload
def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config: ...


@typing.overload
def load_config(path: str | os.PathLike[str], overrides: Sequence[str], schema: type[T]) -> T: ...


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = (), schema: type = Config) -> Any:
    """Read a config file (with its ``_base_`` files) and ``key.sub=value`` overrides into ``schema``.

    ``schema`` is :class:`Config` unless a caller reads another dataclass tree the same way.

    Raises:
        DetkdError: a missing file, invalid YAML (with file:line), a ``_base_`` cycle, an unknown
            key (with the closest valid one), a wrong type or a value outside a key's choices.
    """
    merged, origins = load_layers(find_config(path), ())
    for text in overrides:
        keys, value = _parse_override(text, schema)
        _set_path(merged, keys, value)
        record(origins, ".".join(keys), value, COMMAND_LINE)
    return _build(schema, merged, "", origins, schema)


def schema_for(data: Mapping[str, Any]) -> type[Config]:
    """The one rule, for files and checkpoints alike: data with a ``teacher`` section is a
    distillation config (:class:`DistillConfig`), any other a :class:`Config`."""
    return DistillConfig if "teacher" in data else Config


def is_distill_config(path: str | os.PathLike[str]) -> bool:
    """Whether the file (with its ``_base_`` files) is a distillation config (:func:`schema_for`)."""
    merged, _ = load_layers(find_config(path), ())
    return schema_for(merged) is DistillConfig


def load_any_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """:func:`load_config` with :class:`DistillConfig` for a distillation config, else :class:`Config`."""
    return load_config(path, overrides, schema=DistillConfig if is_distill_config(path) else Config)


def saved_run_config(data: Mapping[str, Any], source: str) -> Config:
    """A checkpoint's ``config`` (a training or a distillation run's, :func:`schema_for`), checked
    as a file is; keys it predates keep their defaults; errors name ``source``."""
    return config_from_dict(data, source, schema_for(data))


def config_from_dict(data: Mapping[str, Any], source: str = "config", schema: type = Config) -> Any:
    """A config from plain data (e.g. a checkpoint's ``config``), checked as a file is; errors
    name ``source``. Keys left out keep their defaults."""
    origins = {"": source}
    record(origins, "", data, source)
    return _build(schema, data, "", origins, schema)


# --- overrides ---------------------------------------------------------------------------------


def _parse_override(text: str, schema: type) -> tuple[list[str], Any]:
    """``key.sub=value`` as key parts and a value typed for the schema."""
    key, sep, raw = text.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise DetkdError(f"{COMMAND_LINE}: override {text!r} is not KEY=VALUE (e.g. train.lr=0.01)")
    hint = _key_type(schema, keys)
    wants_text = strip_optional(hint) is str
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        if not wants_text:
            raise DetkdError(f"{COMMAND_LINE}: the value of {key!r} is not valid YAML: {raw!r}") from None
        value = raw
    if wants_text and isinstance(value, (int, float, bool)):
        value = raw  # output_dir=2024, train_split=2012: keep the text as typed
    return keys, value


def _key_type(schema: type, keys: list[str]) -> Any:
    """The type hint of a dotted key, walking sections and ``dict[str, X]`` fields."""
    tp: Any = schema
    for depth, name in enumerate(keys):
        tp = strip_optional(tp)
        if dataclasses.is_dataclass(tp):
            hints = field_hints(tp)
            if name not in hints:
                raise _unknown_key(tp, name, ".".join(keys[: depth + 1]), COMMAND_LINE, schema)
            tp = hints[name]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            raise DetkdError(f"{COMMAND_LINE}: {'.'.join(keys[:depth])!r} is a value, not a section: "
                             f"cannot set {'.'.join(keys)!r}")
    return tp


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``tree[k1][k2]...`` (creating sections), merging mappings into mappings."""
    node = tree
    for name in keys[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    last = keys[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), Mapping):
        node[last] = merge(node[last], value)
    else:
        node[last] = value


# --- conversion to dataclasses -----------------------------------------------------------------


def _build(cls: type, value: Any, key: str, origins: Mapping[str, str], schema: type) -> Any:
    """A dataclass from a mapping, each value converted by its field's type hint."""
    if not isinstance(value, Mapping):
        raise _type_error(key, origin_of(origins, key), cls, value)
    hints = field_hints(cls)
    kwargs = {}
    for name, sub in value.items():
        path = f"{key}.{name}" if key else str(name)
        if name not in hints:
            raise _unknown_key(cls, str(name), path, origin_of(origins, path), schema)
        kwargs[name] = _convert(sub, hints[name], path, origins, schema)
        _check_value(cls, name, kwargs[name], path, origin_of(origins, path))
    built = cls(**kwargs)
    for names, problem in getattr(built, "problems", list)():  # checks across the section's keys
        paths = [f"{key}.{n}" if key else n for n in names]
        set_in = [origins[p] for p in paths if p in origins]  # where the keys were set (a default: nowhere)
        where = COMMAND_LINE if COMMAND_LINE in set_in else (set_in[-1] if set_in else origin_of(origins, key))
        raise DetkdError(f"{where}: {paths[0]!r} {problem}")
    return built


def _convert(value: Any, tp: Any, key: str, origins: Mapping[str, str], schema: type) -> Any:
    """``value`` checked against (and converted to) the type hint ``tp``."""
    inner = strip_optional(tp)
    if value is None and inner is not tp:
        return None
    if not _fits(value, inner):
        raise _type_error(key, origin_of(origins, key), tp, value)
    if dataclasses.is_dataclass(inner):
        return _build(inner, value, key, origins, schema)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list:
        return [_convert(v, args[0], f"{key}[{i}]", origins, schema) for i, v in enumerate(value)]
    if origin is dict:
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _type_error(f"{key} key", origin_of(origins, key), str, k)
            out[k] = _convert(v, args[1], f"{key}.{k}", origins, schema)
        return out
    return float(value) if inner is float else value


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the outer shape of ``tp`` (elements are checked one by one)."""
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return isinstance(value, Mapping)
    if typing.get_origin(tp) is list:
        return isinstance(value, list)
    if tp is float:
        numeric_text = isinstance(value, str) and _FLOAT_TEXT.fullmatch(value) is not None
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or numeric_text
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (str, bool):
        return isinstance(value, tp)
    if tp is Any:
        return True
    raise TypeError(f"detkd.config: unsupported type hint {tp!r}")


def _check_value(cls: type, name: str, value: Any, key: str, where: str) -> None:
    """A value outside the field's ``choices`` (or ``pattern``) is an error naming the valid ones."""
    meta = field_meta(cls, name)
    choices, pattern = meta.get("choices"), meta.get("pattern")
    if value is None:
        return
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DetkdError(f"{where}: {key!r} must be one of {', '.join(choices)}; got {value!r}{hint}")
    if pattern and not re.fullmatch(pattern[0], str(value)):
        raise DetkdError(f"{where}: {key!r} must be {pattern[1]}; got {value!r}")
    bounds = meta.get("bounds")
    for item in value if isinstance(value, list) else [value]:
        if bounds is not None and isinstance(item, (int, float)) and not isinstance(item, bool) and item not in bounds:
            each = "each element " if isinstance(value, list) else ""
            raise DetkdError(f"{where}: {key!r}: {each}must be {bounds.text()}; got {value!r}")


# --- error messages ----------------------------------------------------------------------------


def _unknown_key(cls: type, name: str, key: str, where: str, schema: type) -> DetkdError:
    """An unknown key, with the closest valid key: a sibling, or the same name in another section."""
    parent = key.rpartition(".")[0]
    prefix = f"{parent}." if parent else ""
    siblings = list(field_hints(cls))
    close = difflib.get_close_matches(name, siblings, n=1)
    elsewhere = [k for k in all_keys(schema) if k.rpartition(".")[2] == name]
    if key in DISTILL_SECTIONS and schema is Config:
        hint = (": this is a distillation config (or a detkd distill run's), read here where a training config is "
                "expected; `detkd distill` runs it, and a distilled student is described by its student config")
    elif close:
        hint = f"; did you mean {prefix + close[0]!r}?"
    elif elsewhere:
        hint = f"; did you mean {elsewhere[0]!r}?"
    else:
        anywhere = difflib.get_close_matches(key, all_keys(schema), n=1, cutoff=0.75)
        hint = f"; did you mean {anywhere[0]!r}?" if anywhere else ""
        hint += f" (valid keys{' in ' + repr(parent) if parent else ''}: {', '.join(siblings)})"
    return DetkdError(f"{where}: unknown key {key!r}{hint}")


def _type_error(key: str, where: str, tp: Any, value: Any) -> DetkdError:
    quote = " (quote it to make it a string)" if strip_optional(tp) is str and _is_scalar(value) else ""
    return DetkdError(f"{where}: {key!r} must be {type_name(tp)}, got {describe(value)}{quote}")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, bool))


def model_section_from_dict(data: dict[str, Any], source: str) -> ModelSection:
    """A :class:`ModelSection` from plain data (a checkpoint's or an export's ``model``), checked
    as a config file is (unknown keys and wrong types are errors naming ``source``)."""
    return config_from_dict({"model": data}, source).model
