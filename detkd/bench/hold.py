"""Hold the data-dependent counts of a Faster R-CNN fixed, so untrained models time like trained ones.

Two counts of an eval forward depend on the weights and the image: the proposals left after the
RPN's NMS (for the same untrained ResNet-50-FPN anything from 371 to 1,000 on different inputs)
and the detections left after the RoI head's score threshold and NMS. The RoI head's cost
(RoIAlign, the box head, post-processing) follows the first, so timings of untrained models
would be noise. Under :func:`hold_counts` every image gets exactly

- ``rpn.post_nms_top_n()`` proposals (``model.rpn.post_nms_top_n_test`` in eval mode), and
- ``roi_heads.detections_per_img`` detections (``model.roi.detections_per_img``),

a trained model's usual (upper) counts. The NMS work itself still runs, and is timed: the kept
boxes are padded afterwards by repeating them cyclically (when none was kept: one full-image
box, score 0, label 1). A trained model on real images usually keeps the full count of
proposals anyway; its detections may be fewer, so held counts are a slight upper bound there.

Implementation: the instance's ``rpn.filter_proposals`` and ``roi_heads.postprocess_detections``
are wrapped (instance attributes shadowing the class methods) and restored on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN


def cyclic_index(kept: int, count: int, device: torch.device) -> Tensor:
    """``[0, 1, .., kept-1, 0, 1, ..]`` of length ``count``: the kept items repeated in order."""
    return torch.arange(count, device=device) % kept


def full_image_box(image_shape: tuple[int, int], like: Tensor) -> Tensor:
    """``[1, 4]`` xyxy box covering an ``(h, w)`` image, dtype and device of ``like``."""
    h, w = image_shape
    return torch.tensor([[0.0, 0.0, float(w), float(h)]], dtype=like.dtype, device=like.device)


def pad_to(tensors: list[Tensor], count: int, fallback: list[Tensor]) -> list[Tensor]:
    """Tensors of one image's kept items (same first dim) cut or padded cyclically to ``count``;
    ``fallback`` (one item each) stands in when nothing was kept."""
    if tensors[0].shape[0] == 0:
        tensors = fallback
    index = cyclic_index(tensors[0].shape[0], count, tensors[0].device)
    return [t[index] for t in tensors]


def held_filter_proposals(model: FasterRCNN, original: Callable[..., Any]) -> Callable[..., Any]:
    """``rpn.filter_proposals`` returning exactly ``rpn.post_nms_top_n()`` boxes per image."""

    def filter_proposals(proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        boxes, scores = original(proposals, objectness, image_shapes, num_anchors_per_level)
        count = model.rpn.post_nms_top_n()
        out_boxes, out_scores = [], []
        for b, s, shape in zip(boxes, scores, image_shapes):
            fallback = [full_image_box(shape, b), s.new_zeros(1)]
            b, s = pad_to([b, s], count, fallback)
            out_boxes.append(b)
            out_scores.append(s)
        return out_boxes, out_scores

    return filter_proposals


def held_postprocess(model: FasterRCNN, original: Callable[..., Any]) -> Callable[..., Any]:
    """``roi_heads.postprocess_detections`` returning exactly ``detections_per_img`` per image."""

    def postprocess_detections(class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                               image_shapes: list[tuple[int, int]]) -> tuple[list[Tensor], ...]:
        boxes, scores, labels = original(class_logits, box_regression, proposals, image_shapes)
        count = model.roi_heads.detections_per_img
        out: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        for b, s, lab, shape in zip(boxes, scores, labels, image_shapes):
            fallback = [full_image_box(shape, b), s.new_zeros(1), lab.new_ones(1)]
            for column, value in zip(out, pad_to([b, s, lab], count, fallback)):
                column.append(value)
        return out

    return postprocess_detections


@contextmanager
def hold_counts(model: FasterRCNN) -> Iterator[FasterRCNN]:
    """Within the block, ``model`` keeps exactly ``post_nms_top_n`` proposals and
    ``detections_per_img`` detections per image (see the module docstring); restored on exit."""
    rpn, roi = model.rpn, model.roi_heads
    saved = {(rpn, "filter_proposals"): rpn.__dict__.get("filter_proposals"),
             (roi, "postprocess_detections"): roi.__dict__.get("postprocess_detections")}
    rpn.filter_proposals = held_filter_proposals(model, rpn.filter_proposals)
    roi.postprocess_detections = held_postprocess(model, roi.postprocess_detections)
    try:
        yield model
    finally:
        for (module, name), previous in saved.items():
            if previous is None:
                delattr(module, name)  # the class method shows through again
            else:
                setattr(module, name, previous)
