"""A config written back: plain data, and YAML that :func:`detkd.config.load.load_config` reads
back to an equal config (the resolved ``config.yaml`` of a run)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import yaml

from detkd.utils.io import atomic_write


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-ready data (nested dicts, lists, scalars)."""
    return dataclasses.asdict(cfg)


class _Dumper(yaml.SafeDumper):
    """Sections as block mappings, lists on one line: ``milestones: [8, 11]``."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Plain config data as detkd writes YAML: sections as blocks, lists on one line, keys in order."""
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def config_to_yaml(cfg: Any) -> str:
    """The config as YAML text that :func:`~detkd.config.load.load_config` reads back to an equal config."""
    header = "# detkd config, resolved: bases, overrides and defaults applied\n"
    return header + dump_yaml(config_to_dict(cfg))


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically (temporary file, then rename)."""
    with atomic_write(path) as f:
        f.write(config_to_yaml(cfg))
