"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

:func:`load_checkpoint` is the one reader of weights files: it refuses a file holding a NaN or
infinite tensor (a damaged file would otherwise score 0 AP without a word), and verifies the
SHA-256 of the bundled demo teacher whenever that file is the one read
(:func:`detkd.experiments.bundled.check_if_bundled`).

A training checkpoint is a dict of plain types and tensors only, so the safe loader can read
it and a checkpoint holding any other pickled object is refused:

- ``model``: the detector's state dict (what ``detkd eval`` and ``detkd export`` read);
- ``module``: the trained module's state dict, when the task trains more than the detector;
- ``optimizer``, ``scheduler``, ``scaler``: their state dicts;
- ``epoch``: the epoch to continue with (0-based), ``iteration``: the batches of that epoch
  already done (0 at an epoch boundary), ``step``: optimizer steps in all;
- ``rng``: the python, numpy, torch CPU and CUDA generator states (:func:`rng_state`);
- ``best``: ``{"metric": "voc.mAP", "value": float | None, "epoch": int | None}``;
- ``config``: the resolved config as a plain dict.
"""

from __future__ import annotations

import os
import pickle
import random
from typing import Any

import numpy as np
import torch

from detkd.errors import DetkdError
from detkd.utils.io import atomic_write


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A process killed at any moment leaves either the previous file or the new one, never a
    truncated one.
    """
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with the safe loader; any problem (unreadable, foreign objects, a NaN or
    infinite tensor, the bundled teacher with another checksum) is a :class:`DetkdError` naming
    the file."""
    from detkd.experiments.bundled import check_if_bundled

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


def model_state_from(state: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
    """The detector's weights in a loaded file: a training checkpoint's ``model``, or a plain state dict."""
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise DetkdError(f"{path}: holds no model weights (expected a detkd checkpoint or a state dict)")
    return weights


def rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, as plain types and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state((np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
