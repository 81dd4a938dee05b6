"""The frozen teacher, driven through its submodules (never ``teacher(images)``).

Calling a torchvision detector on images would propose and NMS its own boxes; distillation
needs the teacher's *dense* outputs (FPN features, RPN objectness and deltas on every anchor) and
its RoI head's scores for the *student's* sampled proposals (Chen et al. section 3; docs/METHOD.md
sections 3 and 4). So the teacher runs step by step: ``transform`` (its own resize: the teacher
sees the image at its resolution) -> ``backbone`` -> ``rpn.head``; and, given boxes in its frame,
``roi_heads.box_roi_pool -> box_head -> box_predictor``.

The teacher is ``eval()`` and ``requires_grad_(False)`` (:func:`freeze_teacher`) and runs under
``torch.no_grad()``. Keeping it outside the trained module, so that the optimizer, ``.train()``
and DDP never reach it, and checking that no teacher parameter is in the optimizer are the
trainer's job. Not ``torch.inference_mode``: its outputs enter the student's losses as constants,
and autograd refuses to save inference tensors for backward -- checked with torch 2.14:
``F.mse_loss(student, teacher_inference_tensor).backward()`` and ``(student * t).sum().backward()``
raise "Inference tensors cannot be saved for backward" (a soft CE happens to work only because
``softmax(t)`` makes a normal tensor first). ``no_grad`` costs the same here: nothing is recorded.

torchvision internals relied on (0.29): ``FasterRCNN.{transform, backbone, rpn, roi_heads}``;
``GeneralizedRCNNTransform.__call__(images) -> (ImageList, targets)`` (resize to its own
``min_size``/``max_size``, normalise, pad to ``size_divisible``); ``RPNHead.__call__(list of maps)
-> (objectness, deltas)`` per level; ``RoIHeads.{box_roi_pool, box_head, box_predictor}`` with
``MultiScaleRoIAlign(features, boxes, image_shapes)`` (it infers each level's scale from the
feature and image sizes and ignores the ``"pool"`` level).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers

from detkd.config import ModelSection
from detkd.config.presets import resolve_model_config
from detkd.errors import DetkdError

# What makes two Faster R-CNNs the same architecture (resolution and proposal counts may differ).
ARCHITECTURE_KEYS = ("torchvision", "backbone", "norm", "fpn_channels", "returned_layers")


@dataclass
class TeacherOutputs:
    """The teacher's dense outputs for one batch (no grad).

    ``image_sizes``: per image ``(h, w)`` after the teacher's resize; ``features``: the FPN maps
    by level name, ``[B, C, H_l, W_l]``; ``objectness``: per level ``[B, A, H_l, W_l]``;
    ``rpn_deltas``: per level ``[B, 4A, H_l, W_l]`` (same level order as ``features``).
    """

    image_sizes: list[tuple[int, int]]
    features: OrderedDict[str, Tensor]
    objectness: list[Tensor]
    rpn_deltas: list[Tensor]
    padded_size: tuple[int, int] | None = None  # the batch tensor's (H, W) after padding


def freeze_teacher(teacher: FasterRCNN) -> FasterRCNN:
    """``eval()`` and ``requires_grad_(False)``; returns the same module.

    That no teacher parameter ends up in an optimizer (the teacher is not a submodule of the
    trained module) is for the trainer to check.
    """
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def run_teacher(teacher: FasterRCNN, images: Sequence[Tensor]) -> TeacherOutputs:
    """The teacher's features and RPN maps for ``images`` (float CHW in [0, 1], any sizes, on the
    teacher's device), at the teacher's own resolution (its ``transform`` resizes them).

    Never calls ``teacher(images)`` (that would propose and NMS its own boxes).
    """
    if teacher.training:
        raise RuntimeError("the teacher must be in eval() mode (use freeze_teacher)")
    image_list, _ = teacher.transform(list(images))
    features = teacher.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    objectness, deltas = teacher.rpn.head(list(features.values()))
    return TeacherOutputs([tuple(s) for s in image_list.image_sizes], features, objectness, deltas,
                          tuple(image_list.tensors.shape[-2:]))


@torch.no_grad()
def teacher_detections(teacher: FasterRCNN, outputs: TeacherOutputs, which: Sequence[int],
                       original_sizes: Sequence[tuple[int, int]], score_threshold: float) -> list[dict[str, Tensor]]:
    """The teacher's detections on images ``which`` of the batch, from the dense outputs it has
    already computed: what ``teacher(images)`` returns, without running the backbone again.

    The steps of torchvision's inference after the RPN head (0.29): anchors, box decoding,
    ``rpn.filter_proposals`` (the teacher's test-time counts), the RoI head in eval mode (its score
    threshold, NMS and ``detections_per_img``) and ``transform.postprocess`` to the original frame.

    Returns per image ``{"boxes": [N, 4] xyxy in the image's own pixels, "labels": [N] int64}``:
    the detections scoring at least ``score_threshold``.
    """
    if not which:
        return []
    idx = torch.as_tensor(list(which), device=outputs.objectness[0].device)
    sizes = [outputs.image_sizes[i] for i in which]
    features = OrderedDict((k, v[idx]) for k, v in outputs.features.items())
    image_list = ImageList(torch.empty(len(which), 0, *outputs.padded_size, device=idx.device), sizes)
    feature_maps = list(features.values())
    anchors = teacher.rpn.anchor_generator(image_list, feature_maps)
    objectness = [o[idx] for o in outputs.objectness]
    counts = [o[0].numel() for o in objectness]
    flat_obj, flat_deltas = concat_box_prediction_layers(objectness, [d[idx] for d in outputs.rpn_deltas])
    proposals = teacher.rpn.box_coder.decode(flat_deltas, anchors).view(len(which), -1, 4)
    boxes, _ = teacher.rpn.filter_proposals(proposals, flat_obj, sizes, counts)
    detections, _ = teacher.roi_heads(features, boxes, sizes)
    detections = teacher.transform.postprocess(detections, sizes, [tuple(s) for s in original_sizes])
    return [{"boxes": d["boxes"][d["scores"] >= score_threshold], "labels": d["labels"][d["scores"] >= score_threshold]}
            for d in detections]


@torch.no_grad()
def teacher_roi_outputs(teacher: FasterRCNN, outputs: TeacherOutputs, boxes: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """The teacher's RoI head on given boxes.

    Args:
        boxes: per image ``[N_i, 4]`` xyxy in the teacher's resized frame (map the student's
            proposals with :func:`detkd.distill.pairing.map_boxes_to_teacher`).
    Returns:
        ``class_logits`` ``[sum N_i, K + 1]`` and ``box_deltas`` ``[sum N_i, 4 (K + 1)]``.
    """
    heads = teacher.roi_heads
    pooled = heads.box_roi_pool(outputs.features, list(boxes), outputs.image_sizes)
    return heads.box_predictor(heads.box_head(pooled))


def check_teacher_compatible(checkpoint: str, teacher_classes: Sequence[str], student_classes: Sequence[str],
                             checkpoint_model: ModelSection, config_model: ModelSection) -> None:
    """Stop with both sides named when the teacher checkpoint cannot teach this student.

    The teacher must know the student's classes in the student's order (its logits are compared
    class by class), and its checkpoint must hold the architecture the teacher config describes.
    """
    if tuple(teacher_classes) != tuple(student_classes):
        raise DetkdError(
            f"{checkpoint}: the teacher was trained on classes {list(teacher_classes)} "
            f"({len(teacher_classes)}), the student's data has {list(student_classes)} ({len(student_classes)})"
        )
    saved, wanted = resolve_model_config(checkpoint_model), resolve_model_config(config_model)
    differ = [k for k in ARCHITECTURE_KEYS if getattr(saved, k) != getattr(wanted, k)]
    differ += [f"roi.{k}" for k in ("box_head_width",) if getattr(saved.roi, k) != getattr(wanted.roi, k)]
    differ += [f"rpn.{k}" for k in ("anchor_sizes", "aspect_ratios") if getattr(saved.rpn, k) != getattr(wanted.rpn, k)]
    if differ:
        pairs = "; ".join(f"{k}: checkpoint {_get(saved, k)!r}, teacher config {_get(wanted, k)!r}" for k in differ)
        raise DetkdError(f"{checkpoint}: the teacher checkpoint is another architecture than the teacher config says ({pairs})")


def _get(section: ModelSection, dotted: str) -> object:
    value: object = section
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
