"""The demo's bundled teacher: weights that ship inside the package, checked before every use.

``detkd/assets/demo_teacher.pt`` is a safe-loadable checkpoint (``model``: the detector's state
dict in float16, ``classes``, ``config``: the resolved training config) of the teacher that
``configs/synth/teacher.yaml`` trains; ``detkd/assets/demo_teacher.json`` is its sidecar: the
SHA-256 of the weights file, the exact command that trained it, the embedded dataset's version
and profile, its AP50 / mAP on the demo's test split and its training time.
:func:`bundled_teacher` refuses a missing, altered or unreadable asset with an error that names
the file and says how to rebuild it; :func:`write_bundled` makes the two files from a finished run
(``tools/bundle_teacher.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detkd.errors import DetkdError

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
TEACHER_FILE, SIDECAR_FILE = "demo_teacher.pt", "demo_teacher.json"
REBUILD = "rebuild it with `detkd demo --train-teacher` (hours on 2 CPU cores), or give one with --teacher CKPT"
SIDECAR_KEYS = ("file", "sha256", "config", "command", "synth_version", "classes", "test")


@dataclass(frozen=True)
class BundledTeacher:
    """The checked asset: the weights file and its sidecar's content."""

    path: str
    sidecar: dict[str, Any]

    @property
    def test_ap50(self) -> float:
        return float(self.sidecar["test"]["ap50"])


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_teacher(asset_dir: str | os.PathLike[str] | None = None) -> BundledTeacher:
    """The bundled teacher (in ``asset_dir``, default :data:`ASSET_DIR`), its sidecar read and its
    checksum verified.

    Raises:
        DetkdError: a missing or unreadable sidecar or weights file, a sidecar without its keys, a
            checksum that differs (naming the file and how to rebuild it).
    """
    folder = Path(ASSET_DIR if asset_dir is None else asset_dir)
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
    found = sha256_of(weights)
    if found != sidecar["sha256"]:
        raise DetkdError(f"{weights}: SHA-256 {found[:12]}... differs from {sidecar['sha256'][:12]}... in {sidecar_path}: "
                         f"the file is damaged or was replaced; {REBUILD}")
    return BundledTeacher(str(weights), sidecar)


def check_if_bundled(path: str | os.PathLike[str]) -> None:
    """When ``path`` is the bundled teacher's weights file (whatever the path names it by), verify
    it as :func:`bundled_teacher` does: every command that loads it, not only the demo, refuses
    a damaged or replaced asset. :func:`detkd.engine.checkpoint.load_checkpoint` calls this."""
    bundled = Path(ASSET_DIR) / TEACHER_FILE
    if os.path.realpath(path) == os.path.realpath(bundled):
        bundled_teacher(ASSET_DIR)


def fits(teacher: BundledTeacher, cfg: Any) -> str | None:
    """Why the bundled teacher is not the teacher that ``cfg`` (a teacher config) describes, or
    None when it is: the same resolved model, embedded data of the same profile and seed."""
    from detkd.config import config_from_dict, config_to_dict
    from detkd.config.presets import resolve_model_config

    saved = config_from_dict(teacher.sidecar["config"], SIDECAR_FILE)
    if cfg.data.format != "synth":
        return f"it was trained on the embedded dataset, not on {cfg.data.format} data"
    if (cfg.data.synth.profile, cfg.data.synth.seed) != (saved.data.synth.profile, saved.data.synth.seed):
        return (f"it was trained on the {saved.data.synth.profile} profile, seed {saved.data.synth.seed}, not "
                f"{cfg.data.synth.profile}, seed {cfg.data.synth.seed}")
    if config_to_dict(resolve_model_config(cfg.model)) != config_to_dict(resolve_model_config(saved.model)):
        return "its model section differs from this teacher config's"
    return None


def write_bundled(checkpoint: str, out_dir: str | os.PathLike[str], command: str, test: dict[str, Any],
                  train_seconds: float | None = None, check: dict[str, Any] | None = None) -> BundledTeacher:
    """Write ``demo_teacher.pt`` (float16 weights, classes, config) and its sidecar from a
    training ``checkpoint``; ``test``: its scores on the demo's test split (``ap50``, ``map``, ...);
    ``check``: its AP50 on a fixed slice of that split (``images``, ``profile``, ``first``, ``ap50``),
    which the test suite recomputes."""
    import torch

    from detkd.data.synth import SYNTH_VERSION
    from detkd.engine.checkpoint import load_checkpoint, model_state_from
    from detkd.models.weights import detector_state_dict
    from detkd.utils.io import atomic_write

    state = load_checkpoint(checkpoint)
    weights = detector_state_dict(model_state_from(state, checkpoint), checkpoint)
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / TEACHER_FILE, "wb") as f:
        torch.save({"model": half, "classes": state["classes"], "config": state["config"]}, f)
    sidecar = {"file": TEACHER_FILE, "sha256": sha256_of(out / TEACHER_FILE), "dtype": "float16",
               "params": sum(v.numel() for v in half.values() if v.is_floating_point()),
               "config": state["config"], "command": command, "synth_version": SYNTH_VERSION,
               "classes": state["classes"], "test": test, "check": check, "train_seconds": train_seconds,
               "epochs": state.get("epoch"), "steps": state.get("step")}
    with atomic_write(out / SIDECAR_FILE) as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    for name in (TEACHER_FILE, SIDECAR_FILE):
        os.chmod(out / name, 0o644)  # package data: readable by every user of the install
    return bundled_teacher(out)
