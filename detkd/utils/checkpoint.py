"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)`` into a :class:`SavedRun`.

This is the one module that knows what a checkpoint holds: :func:`read_checkpoint` is the
typed reader every command uses (``detkd eval``, ``export``, ``bench``, ``distill``'s teacher,
``doctor``'s student, ``train --resume``, the bundled teacher's writer), and
:func:`checkpoint_state` the inverse the trainer saves with; no other module reads a
checkpoint's keys. It sits on the lowest floor (torch, the stdlib, :mod:`detkd.errors` and
:mod:`detkd.utils` only), so ``models/`` reads weights without reaching up to the engine.

:func:`load_checkpoint` reads the file: it refuses a file holding pickled objects other than
tensors and plain types (the safe loader would run no code, but says why), a truncated or
foreign file, one that is not a dict, and one holding a NaN or infinite tensor (a damaged file
would otherwise score 0 AP without a word), naming the file (and the first such tensor); it
verifies the SHA-256 of the bundled demo teacher whenever that file is the one read
(:func:`detkd.utils.assets.check_if_bundled`).

A training checkpoint is a dict of plain types and tensors only:

- ``model``: the detector's state dict (what ``detkd eval`` and ``detkd export`` read);
- ``module``: the trained module's state dict, when the task trains more than the detector
  (a distillation: ``student.*``, ``adapters.*``);
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts;
- ``epoch``: the epoch to continue with (0-based), ``iteration``: the batches of that epoch
  already done (0 at an epoch boundary), ``step``: optimizer steps in all;
- ``rng``: per rank, the python, numpy, torch CPU and CUDA generator states
  (:func:`detkd.engine.checkpoint.rng_state`);
- ``best``: ``{"metric": "voc.mAP", "value": float | None, "epoch": int | None}``;
- ``classes``: the names of labels 1..K;
- ``config``: the resolved config as a plain dict.

The bundled teacher holds ``model`` (float16), ``classes`` and ``config``. A plain state dict
(a torchvision file, a ``detkd export``) is read too: its tensors are the model's weights.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch

from detkd.errors import DetkdError
from detkd.utils.assets import check_if_bundled
from detkd.utils.io import atomic_write

StateDict = dict[str, torch.Tensor]

DETECTOR_ROOTS = ("backbone", "rpn", "roi_heads")  # the top-level modules of a FasterRCNN with parameters
WRAPPER_PREFIXES = ("module.", "student.")  # DistributedDataParallel; a distillation module's student
# what a resume restores besides the weights (see :meth:`SavedRun.missing_for_resume`)
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "iteration", "step", "best", "rng")


@dataclass(frozen=True, eq=False)
class SavedRun:
    """What a checkpoint file holds, as it holds it; None where the file lacks it (or holds
    something of another type there).

    ``model`` is the file's ``model`` (the detector's state dict), or the file itself when it is a
    plain state dict (``plain``); :attr:`model_state` is it, or an error when the file holds no
    weights; :attr:`weights` is the Faster R-CNN's own weights in it.
    """

    path: str
    model: StateDict | None = None
    module: StateDict | None = None
    classes: list[str] | None = None
    config: dict[str, Any] | None = None
    epoch: int | None = None
    iteration: int | None = None
    step: int | None = None
    best: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: list[Any] | None = None
    plain: bool = False

    @property
    def model_state(self) -> StateDict:
        """The model's weights as saved: a training checkpoint's ``model``, or the plain state dict."""
        if self.model is None:
            raise DetkdError(f"{self.path}: holds no model weights (expected a detkd checkpoint or a state dict)")
        return self.model

    @property
    def weights(self) -> StateDict:
        """The Faster R-CNN's own weights (:func:`detector_state_dict` of :attr:`model_state`)."""
        return detector_state_dict(self.model_state, self.path)

    def missing_for_resume(self) -> list[str]:
        """The keys of :data:`RESUME_KEYS` the file lacks for ``--resume`` (a plain state dict lacks ``model``)."""
        return [key for key in RESUME_KEYS if getattr(self, key) is None or (key == "model" and self.plain)]


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> SavedRun:
    """The checkpoint at ``path``, read and refused as :func:`load_checkpoint` does, as a :class:`SavedRun`."""
    path = os.fspath(path)
    state = load_checkpoint(path, map_location)
    model = state.get("model", state)
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        model = None
    if "model" not in state and model is not None:
        return SavedRun(path, model=model, plain=True)
    return SavedRun(
        path, model=model, module=_typed(state, "module", dict), classes=_typed(state, "classes", list),
        config=_typed(state, "config", dict), epoch=_typed(state, "epoch", int),
        iteration=_typed(state, "iteration", int), step=_typed(state, "step", int), best=_typed(state, "best", dict),
        optimizer=_typed(state, "optimizer", dict), scheduler=_typed(state, "scheduler", dict),
        scaler=_typed(state, "scaler", dict), rng=_typed(state, "rng", list),
    )


def _typed(state: dict[str, Any], key: str, kind: type) -> Any:
    """``state[key]`` when it is a ``kind``, else None."""
    value = state.get(key)
    return value if isinstance(value, kind) else None


def checkpoint_state(run: SavedRun) -> dict[str, Any]:
    """The dict a checkpoint file holds for ``run`` (what :func:`read_checkpoint` reads back): its
    fields that are set, under their keys (``path`` and ``plain`` are not saved)."""
    fields = ("model", "module", "optimizer", "scheduler", "scaler", "epoch", "iteration", "step", "best", "rng",
              "classes", "config")
    return {key: getattr(run, key) for key in fields if getattr(run, key) is not None}


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A process killed at any moment leaves either the previous file or the new one, never a
    truncated one.
    """
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict a checkpoint file holds, read with the safe loader; any problem (unreadable,
    foreign objects, a NaN or infinite tensor, the bundled teacher with another checksum) is a
    :class:`DetkdError` naming the file. Read it through :func:`read_checkpoint`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DetkdError(f"{path}: checkpoint not found")
    check_if_bundled(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DetkdError(
            f"{path}: refused: the checkpoint holds objects other than tensors and plain types "
            f"(torch.load weights_only=True: {first})"
        ) from None
    except Exception as e:  # a truncated or foreign file: zip errors, EOFError, RuntimeError
        raise DetkdError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise DetkdError(f"{path}: not a detkd checkpoint (a {type(state).__name__}, expected a dict)")
    bad = non_finite_tensors(state)
    if bad:
        raise DetkdError(f"{path}: refused: {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); the file is "
                         "damaged, or was saved from a run that diverged")
    return state


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """The dotted names of the floating-point tensors in ``obj`` (nested dicts, lists and tuples,
    as a checkpoint holds them) with a NaN or infinite value, in order."""
    if isinstance(obj, torch.Tensor):
        return [] if not obj.is_floating_point() or bool(torch.isfinite(obj).all()) else [prefix or "tensor"]
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj))
    else:
        return []
    bad: list[str] = []
    for key, value in items:
        bad += non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return bad


def detector_state_dict(state: StateDict, source: str) -> StateDict:
    """The Faster R-CNN's own weights in a state dict of the trained module.

    ``module.`` (DistributedDataParallel) is stripped; when keys start with ``student.`` (a
    distillation module), those are the detector's, prefix stripped; then only the keys of the
    detector's modules (``backbone.``, ``rpn.``, ``roi_heads.``) are kept, so a distillation
    module's ``adapters.*`` (and any ``teacher.*``) are dropped.
    """
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    kept = {k: v for k, v in state.items() if k.split(".", 1)[0] in DETECTOR_ROOTS}
    if not kept:
        first = ", ".join(list(state)[:3]) or "none"
        raise DetkdError(f"{source}: no Faster R-CNN weights found (keys start with {first})")
    return kept
