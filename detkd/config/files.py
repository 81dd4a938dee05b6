"""detkd's own configs, found by name from any folder.

The repository's ``configs/`` folder is installed inside the package (``detkd/configs``, package
data of ``detkd.configs``: see pyproject.toml). A config path that does not exist where it is
given (relative to the working directory, or to the file whose ``_base_`` names it) is looked
up there: ``synth/teacher.yaml`` and ``configs/synth/teacher.yaml`` both name
``detkd/configs/synth/teacher.yaml``, so that ``detkd train synth/teacher.yaml``, ``detkd demo``
and a config written elsewhere with ``_base_: _base_/distill_recipe.yaml`` work after a wheel
install, from any folder. A file of the working directory always wins over a packaged one of the
same name. In a source checkout (``pip install -e .``, or ``PYTHONPATH``), the packaged configs
are the checkout's ``configs/``.

``detkd/...`` paths (``teacher.checkpoint: detkd/assets/demo_teacher.pt``) are found in the
installed package the same way (:func:`find_packaged`).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # detkd/
CONFIGS_PREFIX = "configs/"
PACKAGE_PREFIX = "detkd/"


def configs_root() -> Path:
    """The folder of detkd's configs: ``detkd/configs`` in an installed wheel, else the source
    checkout's ``configs/`` beside ``detkd/``."""
    installed = Path(str(importlib.resources.files("detkd").joinpath("configs")))
    if installed.is_dir():
        return installed
    return PACKAGE_DIR.parent / "configs"


def _posix(path: str) -> str:
    text = Path(path).as_posix()
    return text[2:] if text.startswith("./") else text


def find_config(path: str | os.PathLike[str]) -> str:
    """``path`` itself when it exists (a file or a folder); else detkd's config (or config folder)
    of that name, with or without the leading ``configs/``; else ``path`` unchanged (the caller
    says it is not found)."""
    text = os.fspath(path)
    if not text or os.path.exists(text) or os.path.isabs(text):
        return text
    name = _posix(text)
    root = configs_root()
    for candidate in (name, name[len(CONFIGS_PREFIX):] if name.startswith(CONFIGS_PREFIX) else None):
        if candidate and (root / candidate).exists():
            return str(root / candidate)
    return text


def find_packaged(path: str) -> str:
    """``path`` when it exists; a missing ``detkd/...`` path found in the installed package
    (e.g. ``detkd/assets/demo_teacher.pt``); a missing config path found by :func:`find_config`."""
    if not path or os.path.exists(path) or os.path.isabs(path):
        return path
    name = _posix(path)
    if name.startswith(PACKAGE_PREFIX) and (PACKAGE_DIR / name[len(PACKAGE_PREFIX):]).exists():
        return str(PACKAGE_DIR / name[len(PACKAGE_PREFIX):])
    return find_config(path)


def description(path: Path) -> str:
    """The first comment line of a YAML file, without its ``#`` (empty when it has none)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("#"):
                return line.strip().lstrip("#").strip()
            if line.strip():
                break
    return ""


def list_configs(under: str = "") -> list[tuple[str, str]]:
    """``(name, description)`` of every packaged config (names relative to :func:`configs_root`,
    sorted), only those under the folder ``under`` when given."""
    root = configs_root()
    prefix = _posix(under).removeprefix(CONFIGS_PREFIX).strip("/") if under else ""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))
    if prefix:
        names = [n for n in names if n.startswith(prefix + "/") or n == prefix]
    return [(n, description(root / n)) for n in names]
