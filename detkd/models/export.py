"""Export a trained detector: a plain torchvision state dict with its model arguments, and ONNX.

``export_student(CHECKPOINT, OUT.pt)`` writes

- ``OUT.pt``: the Faster R-CNN's state dict only (``backbone.*``, ``rpn.*``, ``roi_heads.*``),
  without a training wrapper's prefixes (``student.``, ``module.``) or its extra modules
  (distillation ``adapters.*``), loadable with ``torch.load(weights_only=True)``;
- ``OUT.json``: what rebuilds the model: ``num_classes`` (K + 1), ``classes`` (label 1..K names)
  and ``model``, the resolved :class:`~detkd.config.ModelSection` (preset expanded, no weight
  sources), so ``build_model(model, num_classes)`` -- or the same torchvision calls by hand --
  gives a model that loads ``OUT.pt`` with ``strict=True`` (:func:`load_exported` does both).

The model is an ordinary :class:`torchvision.models.detection.FasterRCNN` of torchvision modules.

ONNX (``export_onnx``, the optional extra ``pip install detkd[export]``): torchvision's Faster
R-CNN through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 11+,
as torchvision's own ONNX tests): input one image ``[3, H, W]`` float in [0, 1] with dynamic H
and W, outputs ``boxes [D, 4]``, ``labels [D]`` (int64), ``scores [D]``. The dynamo exporter does
not handle the data-dependent control flow of torchvision's detection post-processing. The
export is checked with onnxruntime against PyTorch on a few images (:func:`check_onnx`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torchvision.models.detection import FasterRCNN

from detkd.config import ModelSection, model_section_from_dict, resolve_model_config
from detkd.errors import DetkdError
from detkd.models.detector import build_model
from detkd.models.weights import StateDict, load_state_checked
from detkd.utils.checkpoint import SavedRun, read_checkpoint
from detkd.utils.io import atomic_write

log = logging.getLogger("detkd")

EXPORT_FORMAT = "detkd.export/1"
PREDICTOR_KEY = "roi_heads.box_predictor.cls_score.weight"
BOX_TOLERANCE, SCORE_TOLERANCE = 1e-2, 1e-4  # pixels; score units


def sidecar_path(out_path: str) -> str:
    """``OUT.pt`` -> ``OUT.json``."""
    return os.path.splitext(out_path)[0] + ".json"


def check_outputs(source: str, outputs: list[str], force: bool = False) -> None:
    """Refuse outputs that would destroy a file: one that is the input (or another output), and,
    without ``force``, one that exists; each error names both files."""
    real = {os.path.realpath(source): f"the input {source}"}
    for out in outputs:
        key = os.path.realpath(out)
        if key in real:
            raise DetkdError(f"{out}: would overwrite {real[key]}; choose another output name")
        real[key] = f"the output {out}"
        if os.path.isdir(out):
            raise DetkdError(f"{out}: is a folder; give a file name")
        if os.path.exists(out) and not force:
            raise DetkdError(f"{out}: exists; pass --force to replace it, or choose another output name")


def export_student(checkpoint_path: str, out_path: str, force: bool = False,
                   extra_outputs: Sequence[str] = ()) -> dict[str, Any]:
    """Write the detector of a checkpoint as ``out_path`` (state dict) and its sidecar JSON.

    Returns the sidecar's content. Raises :class:`DetkdError` for an unreadable checkpoint, one
    without a config, weights that do not fit the config's model, or outputs that would
    overwrite the checkpoint, each other (``extra_outputs``: e.g. the ONNX file) or, without
    ``force``, an existing file (:func:`check_outputs`); nothing is written then.
    """
    check_outputs(checkpoint_path, [out_path, sidecar_path(out_path), *extra_outputs], force)
    run = read_checkpoint(checkpoint_path)
    weights = run.weights
    cfg = export_model_section(run)
    if PREDICTOR_KEY not in weights:
        raise DetkdError(f"{checkpoint_path}: no {PREDICTOR_KEY} in the weights: not a Faster R-CNN checkpoint")
    num_classes = int(weights[PREDICTOR_KEY].shape[0])
    build_checked(cfg, num_classes, weights, checkpoint_path)  # fails here, not in the user's hands
    info = {
        "format": EXPORT_FORMAT,
        "num_classes": num_classes,
        "classes": class_names(run, num_classes),
        "model": dataclasses.asdict(cfg),
        "builder": cfg.torchvision,  # torchvision's builder of this model (model.torchvision), or null
        "torchvision": torchvision.__version__,
        "source": os.path.abspath(checkpoint_path),
    }
    with atomic_write(out_path, "wb") as f:
        torch.save(weights, f)
    with atomic_write(sidecar_path(out_path)) as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return info


def export_model_section(run: SavedRun) -> ModelSection:
    """The checkpoint's ``config.model``, preset expanded and weight sources removed."""
    config = run.config
    if config is None or not isinstance(config.get("model"), dict):
        raise DetkdError(f"{run.path}: the checkpoint holds no config.model (not written by detkd train?)")
    cfg = resolve_model_config(model_section_from_dict(config["model"], run.path))
    cfg.weights = cfg.weights_backbone = cfg.checkpoint = None  # the export holds every weight
    return cfg


def class_names(run: SavedRun, num_classes: int) -> list[str]:
    """Names of labels 1..K: the checkpoint's ``classes`` (or ``config.data.classes``), else ``class_N``."""
    names = run.classes or (run.config or {}).get("data", {}).get("classes")
    if isinstance(names, list) and len(names) == num_classes - 1:
        return [str(n) for n in names]
    return [f"class_{i}" for i in range(1, num_classes)]


def build_checked(cfg: ModelSection, num_classes: int, weights: StateDict, source: str) -> FasterRCNN:
    """The model of ``cfg`` with ``weights`` loaded (every key, every shape), in eval mode."""
    model = build_model(cfg, num_classes)
    load_state_checked(model, weights, source, "exported")
    return model.eval()


def load_exported(path: str) -> tuple[FasterRCNN, dict[str, Any]]:
    """An export (``OUT.pt`` beside ``OUT.json``) as a model in eval mode, and the sidecar."""
    meta_path = sidecar_path(path)
    try:
        with open(meta_path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DetkdError(f"{meta_path}: cannot read the export's model arguments ({e})") from None
    if info.get("format") != EXPORT_FORMAT:
        raise DetkdError(f"{meta_path}: not a detkd export (format {info.get('format')!r})")
    cfg = model_section_from_dict(info["model"], meta_path)
    return build_checked(cfg, int(info["num_classes"]), read_checkpoint(path).model_state, path), info


# --- ONNX ----------------------------------------------------------------------------------------


def require_onnx() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules, or a DetkdError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise DetkdError(f"ONNX export needs onnx and onnxruntime ({e.name} is not installed): "
                         "pip install 'detkd[export]'") from None
    return onnx, onnxruntime


def export_onnx(model: FasterRCNN, path: str, example: torch.Tensor, opset: int = 17) -> None:
    """Export ``model`` (eval mode) to ONNX with one image input ``[3, H, W]`` of dynamic size.

    ``example`` is the image traced; every other size works through the dynamic axes.
    """
    onnx, _ = require_onnx()
    model.eval()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings():  # the tracer's notes on torchvision's shape arithmetic
        warnings.simplefilter("ignore")
        trace_to_onnx(model, path, example, opset)
    onnx.checker.check_model(onnx.load(path))


def trace_to_onnx(model: FasterRCNN, path: str, example: torch.Tensor, opset: int) -> None:
    torch.onnx.export(
        model,
        ([example],),
        path,
        dynamo=False,  # torchvision detection: the TorchScript-based exporter (see the module docstring)
        opset_version=opset,
        do_constant_folding=True,
        input_names=["image"],
        output_names=["boxes", "labels", "scores"],
        dynamic_axes={"image": [1, 2], "boxes": [0], "labels": [0], "scores": [0]},
    )


def check_onnx(model: FasterRCNN, path: str, images: Sequence[torch.Tensor]) -> list[str]:
    """Compare ONNX Runtime's detections with PyTorch's on ``images``; returns one line per image.

    Detections must agree one to one, in order: same labels, boxes within 1e-2 px, scores within
    1e-4. Detections scoring within 1e-3 of ``box_score_thresh`` are left out on both sides (a
    rounding difference may put them on either side of the threshold).

    Raises:
        DetkdError: the first disagreement, naming the image and the detection.
    """
    _, ort = require_onnx()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    floor = model.roi_heads.score_thresh + 1e-3
    lines = []
    for i, image in enumerate(images):
        with torch.no_grad():
            ref = model([image])[0]
        boxes, labels, scores = session.run(None, {"image": image.numpy()})
        got = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "scores": torch.from_numpy(scores)}
        lines.append(f"image {i} ({image.shape[2]}x{image.shape[1]}): " + compare_detections(ref, got, floor, i))
    return lines


def compare_detections(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], floor: float, i: int) -> str:
    ref = {k: v[ref["scores"] >= floor] for k, v in ref.items()}
    got = {k: v[got["scores"] >= floor] for k, v in got.items()}
    problem = None
    if len(ref["scores"]) != len(got["scores"]):
        problem = f"{len(got['scores'])} detections in ONNX, {len(ref['scores'])} in PyTorch"
    elif not torch.equal(ref["labels"], got["labels"].to(ref["labels"].dtype)):
        problem = "labels differ"
    else:
        box_err = float((ref["boxes"] - got["boxes"]).abs().max()) if len(ref["boxes"]) else 0.0
        score_err = float((ref["scores"] - got["scores"]).abs().max()) if len(ref["scores"]) else 0.0
        if box_err > BOX_TOLERANCE or score_err > SCORE_TOLERANCE:
            problem = f"max box error {box_err:.2e} px (limit 1e-2), max score error {score_err:.2e} (limit 1e-4)"
        else:
            return f"{len(ref['scores'])} detections match (box error {box_err:.1e} px, score error {score_err:.1e})"
    raise DetkdError(f"ONNX detections differ from PyTorch's on test image {i}: {problem}")
