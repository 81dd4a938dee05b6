"""The bundled demo teacher's files, verified against their sidecar's SHA-256 wherever they are read.

``detkd/assets/demo_teacher.pt`` ships with ``demo_teacher.json`` beside it (written by
:func:`detkd.experiments.bundled.write_bundled`), whose ``sha256`` pins the weights file.
:func:`verified_sidecar` checks such a folder; :func:`check_if_bundled` runs that check for
every checkpoint :func:`detkd.utils.checkpoint.load_checkpoint` reads that is the bundled
teacher -- the package's own file by whatever path names it, or a ``demo_teacher.pt`` beside a
``demo_teacher.json`` (a copy of the asset folder, as ``tools/bundle_teacher.py --out`` writes
one) -- so every command that loads it refuses a damaged or replaced asset, not only the demo.

This module sits on the lowest floor (stdlib and :mod:`detkd.errors` only), below the reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from detkd.errors import DetkdError

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
TEACHER_FILE, SIDECAR_FILE = "demo_teacher.pt", "demo_teacher.json"
REBUILD = "rebuild it with `detkd demo --train-teacher` (hours on 2 CPU cores), or give one with --teacher CKPT"
SIDECAR_KEYS = ("file", "sha256", "config", "command", "synth_version", "classes", "test")


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HASHED: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime in ns) -> SHA-256, this process's


def checked_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_of`, read once per process while the file's size and modification time stay
    the same (a demo loads the teacher in several steps); a file written since is read again."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_of(path)
    return _HASHED[key]


def verified_sidecar(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of the bundled teacher in ``folder``, read, with the weights' checksum verified.

    Raises:
        DetkdError: a missing or unreadable sidecar or weights file, a sidecar without its keys, a
            checksum that differs (naming the file and how to rebuild it).
    """
    folder = Path(folder)
    sidecar_path, weights = folder / SIDECAR_FILE, folder / TEACHER_FILE
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DetkdError(f"{sidecar_path}: the bundled teacher's sidecar is missing; {REBUILD}") from None
    except (OSError, ValueError) as e:
        raise DetkdError(f"{sidecar_path}: not a readable sidecar ({e}); {REBUILD}") from None
    missing = [k for k in SIDECAR_KEYS if not isinstance(sidecar, dict) or k not in sidecar]
    if missing:
        raise DetkdError(f"{sidecar_path}: the sidecar lacks {', '.join(missing)}; {REBUILD}")
    if not weights.is_file():
        raise DetkdError(f"{weights}: the bundled teacher's weights are missing; {REBUILD}")
    found = checked_sha256(weights)
    if found != sidecar["sha256"]:
        raise DetkdError(f"{weights}: SHA-256 {found[:12]}... differs from {sidecar['sha256'][:12]}... in {sidecar_path}: "
                         f"the file is damaged or was replaced; {REBUILD}")
    return sidecar


def bundled_folder(path: str | os.PathLike[str]) -> Path | None:
    """The asset folder when ``path`` is the bundled teacher's weights file (the package's own, by
    whatever path names it, or a ``demo_teacher.pt`` beside a ``demo_teacher.json``), else None."""
    real = Path(os.path.realpath(path))
    if real.name != TEACHER_FILE:
        return None
    if real == Path(os.path.realpath(ASSET_DIR / TEACHER_FILE)) or (real.parent / SIDECAR_FILE).is_file():
        return real.parent
    return None


def check_if_bundled(path: str | os.PathLike[str]) -> None:
    """When ``path`` is the bundled teacher's weights file (:func:`bundled_folder`), verify it as
    :func:`verified_sidecar` does; any other file passes unchecked."""
    folder = bundled_folder(path)
    if folder is not None:
        verified_sidecar(folder)
