"""Config files and their bases: YAML read safely (a key given twice refused), ``_base_`` files
merged under the file that names them, and where each key path was set (for error messages).

``_base_: other.yaml`` (or a list of files; paths relative to the file that names them, or, not
found there, detkd's own configs by name: :mod:`detkd.config.files`) builds on other configs: the
bases are merged in order, then the file itself, mappings merged key by key, everything else
(lists included) replaced.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from detkd.config.fields import describe
from detkd.config.files import find_config
from detkd.errors import DataError, DetkdError

BASE_KEY = "_base_"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names a key twice (PyYAML keeps the last one silently)."""

    def __init__(self, key: Any, first: int, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.line = key, first, line


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(key, seen[key], line)
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str, named_by: str | None = None) -> dict[str, Any]:
    """One YAML file as a mapping; user errors name the file (and line)."""
    what = f"{named_by}: _base_ file" if named_by else "config file"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DetkdError(f"{what} not found: {path} (nor among detkd's configs: `detkd configs` lists "
                         "them)") from None
    except IsADirectoryError:
        raise DetkdError(f"{what} is a directory, not a YAML file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read config: {e}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader: no code, no objects)
    except DuplicateKeyError as e:
        raise DataError(path, f"duplicate key {e.key!r} (first at line {e.first}); the second would silently "
                        "replace the first", e.line) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(path, f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(path, f"a config must be a mapping of keys, got {describe(data)}")
    return data


def load_layers(path: str, chain: tuple[str, ...], named_by: str | None = None) -> tuple[dict, dict]:
    """The file merged over its bases, and the file each key path came from."""
    real = os.path.realpath(path)
    if real in chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*chain[chain.index(real):], real))
        raise DetkdError(f"{path}: _base_ cycle: {cycle}")
    raw = read_yaml(path, named_by)
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for base in base_paths(raw.pop(BASE_KEY, None), path):
        layer, layer_origins = load_layers(base, (*chain, real), named_by=path)
        merged = merge(merged, layer)
        origins.update(layer_origins)
    record(origins, "", raw, path)
    return merge(merged, raw), origins


def base_paths(value: Any, path: str) -> list[str]:
    """``_base_`` as a list of paths, relative ones resolved against the naming file's folder, or
    (not found there) among detkd's configs by name."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DetkdError(f"{path}: '_base_' must be a file name or a list of file names, got {describe(value)}")
    folder = os.path.dirname(path)
    return [base_path(folder, n) for n in names]


def base_path(folder: str, name: str) -> str:
    """``name`` in ``folder``, or (not there) detkd's config of that name; the first when neither exists."""
    local = os.path.join(folder, os.path.expanduser(name))
    packaged = find_config(name)
    return local if os.path.exists(local) or packaged == name else packaged


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def record(origins: dict[str, str], prefix: str, value: Any, source: str) -> None:
    """Note ``source`` as where ``prefix`` and every key path below it were last set."""
    if prefix:
        origins[prefix] = source
    if isinstance(value, Mapping):
        for key, sub in value.items():
            record(origins, f"{prefix}.{key}" if prefix else str(key), sub, source)


def origin_of(origins: Mapping[str, str], key: str) -> str:
    """The file (or command line) that set ``key``, or the nearest enclosing key."""
    key = re.sub(r"\[\d+\]", "", key)
    while key and key not in origins:
        key = key.rpartition(".")[0]
    return origins.get(key) or next(iter(origins.values()), "config")

