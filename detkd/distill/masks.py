"""Where on the student's feature maps a hint is taken: the object-region mask.

Wang et al., *Distilling Object Detectors with Fine-grained Feature Imitation* (CVPR 2019),
section 3.1: for each ground-truth box, the IoU of every anchor with it gives an IoU map; with
``M`` the box's largest IoU over the anchors, the cells that hold an anchor of IoU above
``psi * M`` are the box's "near object" cells (psi = 0.5 in the paper); the mask is their union
over the image's boxes. The teacher's features differ from the student's most there, and the
background, which dominates a plain hint's average, is left out.

With an FPN (the paper used a single feature map) the rule is applied to each level on its own:
a box marks cells on every level, its best-matching anchors of that level and their
neighbourhood. The anchors are torchvision's (``StudentOutputs.anchors``, in the student's
resized frame), so the mask lies on the student's grids and combines with the valid-cell masks
of :func:`detkd.distill.pairing.align_teacher_map`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou


def level_anchor_counts(objectness: Sequence[Tensor]) -> list[int]:
    """Anchors per image on each level: ``A_l * H_l * W_l`` of the maps ``[B, A_l, H_l, W_l]``."""
    return [int(o[0].numel()) for o in objectness]


def object_masks(anchors: Tensor, gt_boxes: Sequence[Tensor], objectness: Sequence[Tensor],
                 psi: float = 0.5) -> list[Tensor]:
    """Per level, ``[B, 1, H_l, W_l]`` bool: the cells near a ground-truth box (module docstring).

    Args:
        anchors: ``[N, 4]`` the anchors of one image in torchvision's flat order (level by level,
            each in ``(y, x, a)`` order), xyxy.
        gt_boxes: per image ``[G_i, 4]`` xyxy, in the anchors' frame (``G_i`` may be 0: no cell).
        objectness: the RPN's per-level maps ``[B, A_l, H_l, W_l]`` (they fix the layout).
        psi: the share of a box's best IoU an anchor must exceed.
    """
    masks = []
    for level_anchors, obj in zip(anchors.split(level_anchor_counts(objectness)), objectness):
        b, a, h, w = obj.shape
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=anchors.device)
        for i, boxes in enumerate(gt_boxes):
            if len(boxes):
                mask[i, 0] = near_object_cells(level_anchors, boxes, psi).view(h, w, a).any(dim=2)
        masks.append(mask)
    return masks


def near_object_cells(anchors: Tensor, boxes: Tensor, psi: float) -> Tensor:
    """``[N]`` bool: anchors whose IoU with some box exceeds ``psi`` times that box's best IoU."""
    iou = box_iou(boxes.to(anchors.dtype), anchors)  # [G, N]
    best = iou.max(dim=1, keepdim=True).values
    return ((iou > psi * best) & (best > 0)).any(dim=0)
