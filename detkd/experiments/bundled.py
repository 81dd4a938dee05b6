"""The demo's bundled teacher: weights that ship inside the package, checked before every use.

``detkd/assets/demo_teacher.pt`` is a safe-loadable checkpoint (``model``: the detector's state
dict in float16, ``classes``, ``config``: the resolved training config) of the teacher that
``configs/synth/teacher.yaml`` trains; ``detkd/assets/demo_teacher.json`` is its sidecar: the
SHA-256 of the weights file, the exact command that trained it, the embedded dataset's version
and profile, its AP50 / mAP on the demo's test split and its training time.
:func:`bundled_teacher` refuses a missing, altered or unreadable asset with an error that names
the file and says how to rebuild it; :func:`write_bundled` makes the two files from a finished run
(``tools/bundle_teacher.py``).

The checksum check itself is :func:`detkd.utils.assets.verified_sidecar`, on the lowest floor:
the checkpoint reader (:func:`detkd.utils.checkpoint.load_checkpoint`) runs it whenever the file
it reads is the bundled teacher, so every command that loads the asset refuses a damaged one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detkd.config import config_from_dict, config_to_dict
from detkd.config.presets import resolve_model_config
from detkd.data.synth import SYNTH_VERSION
from detkd.errors import DetkdError
from detkd.utils.assets import ASSET_DIR, SIDECAR_FILE, TEACHER_FILE, sha256_of, verified_sidecar
from detkd.utils.checkpoint import SavedRun, checkpoint_state, read_checkpoint, save_checkpoint
from detkd.utils.io import atomic_write


@dataclass(frozen=True)
class BundledTeacher:
    """The checked asset: the weights file and its sidecar's content."""

    path: str
    sidecar: dict[str, Any]

    @property
    def test_ap50(self) -> float:
        return float(self.sidecar["test"]["ap50"])


def bundled_teacher(asset_dir: str | os.PathLike[str] | None = None) -> BundledTeacher:
    """The bundled teacher (in ``asset_dir``, default :data:`ASSET_DIR`), its sidecar read and its
    checksum verified.

    Raises:
        DetkdError: a missing or unreadable sidecar or weights file, a sidecar without its keys, a
            checksum that differs (naming the file and how to rebuild it).
    """
    folder = Path(ASSET_DIR if asset_dir is None else asset_dir)
    return BundledTeacher(str(folder / TEACHER_FILE), verified_sidecar(folder))


def fits(teacher: BundledTeacher, cfg: Any) -> str | None:
    """Why the bundled teacher is not the teacher that ``cfg`` (a teacher config) describes, or
    None when it is: the same resolved model, embedded data of the same profile and seed."""
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
    run = read_checkpoint(checkpoint)
    half = {k: v.half() if v.is_floating_point() else v for k, v in run.weights.items()}
    if run.classes is None or run.config is None:
        raise DetkdError(f"{checkpoint}: holds no classes or no config (not written by detkd train?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_file = str(out / TEACHER_FILE)
    save_checkpoint(weights_file, checkpoint_state(SavedRun(weights_file, model=half, classes=run.classes,
                                                             config=run.config)))
    sidecar = {"file": TEACHER_FILE, "sha256": sha256_of(weights_file), "dtype": "float16",
               "params": sum(v.numel() for v in half.values() if v.is_floating_point()),
               "config": run.config, "command": command, "synth_version": SYNTH_VERSION,
               "classes": run.classes, "test": test, "check": check, "train_seconds": train_seconds,
               "epochs": run.epoch, "steps": run.step}
    with atomic_write(out / SIDECAR_FILE) as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    for name in (TEACHER_FILE, SIDECAR_FILE):
        os.chmod(out / name, 0o644)  # package data: readable by every user of the install
    return bundled_teacher(out)
