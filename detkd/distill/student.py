"""The student's training forward, opened up: torchvision's losses plus what distillation needs.

``student_forward(model, images, targets)`` runs a torchvision ``FasterRCNN`` in training mode
through the same steps, in the same order and with the same random draws as ``model(images,
targets)`` (so the detection losses are equal for the same seed), and returns, beside the losses,
the student's FPN features, its dense RPN maps, the RPN's sampled anchors and the RoI head's
sampled proposals with their logits, deltas, labels and regression targets (Chen et al. section
3: the soft and bounded terms are taken on exactly the samples the hard terms use).

torchvision internals relied on (checked against torchvision 0.29.1): ``GeneralizedRCNNTransform``
(``model.transform``), ``RegionProposalNetwork.{head, anchor_generator, box_coder,
filter_proposals, assign_targets_to_anchors, fg_bg_sampler}``, ``rpn.concat_box_prediction_layers``
(flattened anchor order: image, then level, then ``(y, x, a)``), ``RoIHeads.{
select_training_samples, box_roi_pool, box_head, box_predictor}`` and ``roi_heads.fastrcnn_loss``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import concat_box_prediction_layers


@dataclass
class RPNSamples:
    """The S anchors the RPN loss samples (the ``num_positive`` positives first), over the batch.

    ``labels`` ``[S]`` (1 object, 0 background), ``targets`` ``[S, 4]`` encoded deltas,
    ``logits`` ``[S]`` and ``deltas`` ``[S, 4]`` the student's (with grad); where each anchor sits:
    ``image``, ``level`` (index into the FPN levels), ``anchor`` (a of A), ``y``, ``x``, all ``[S]``.
    """

    num_positive: int
    labels: Tensor
    targets: Tensor
    logits: Tensor
    deltas: Tensor
    image: Tensor
    level: Tensor
    anchor: Tensor
    y: Tensor
    x: Tensor


@dataclass
class RoISamples:
    """The RoI head's sampled proposals: ``proposals`` per image ``[N_i, 4]`` (student frame),
    ``labels`` ``[sum N_i]`` (0 background), ``targets`` ``[sum N_i, 4]``, ``class_logits``
    ``[sum N_i, K + 1]`` and ``box_regression`` ``[sum N_i, 4 (K + 1)]`` (with grad)."""

    proposals: list[Tensor]
    labels: Tensor
    targets: Tensor
    class_logits: Tensor
    box_regression: Tensor


@dataclass
class StudentOutputs:
    """One training pass of the student: ``losses`` as torchvision computes them, and the rest."""

    losses: dict[str, Tensor]
    image_sizes: list[tuple[int, int]]
    features: OrderedDict[str, Tensor]
    objectness: list[Tensor]
    rpn_deltas: list[Tensor]
    rpn: RPNSamples
    roi: RoISamples


def student_forward(model: FasterRCNN, images: Sequence[Tensor], targets: Sequence[dict[str, Any]]) -> StudentOutputs:
    """``model(images, targets)`` in training mode, step by step (see the module docstring)."""
    image_list, targets = model.transform(list(images), [dict(t) for t in targets])
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    objectness, deltas = model.rpn.head(list(features.values()))
    proposals, rpn = forward_rpn(model, image_list, list(features.values()), objectness, deltas, targets)
    roi = forward_roi(model, features, proposals, image_list.image_sizes, targets)
    losses = {**roi_losses(roi), **rpn_losses(rpn)}
    sizes = [tuple(s) for s in image_list.image_sizes]
    return StudentOutputs(losses, sizes, features, objectness, deltas, rpn, roi)


def forward_rpn(model: FasterRCNN, images: ImageList, features: list[Tensor], objectness: list[Tensor],
                deltas: list[Tensor], targets: list[dict[str, Tensor]]) -> tuple[list[Tensor], RPNSamples]:
    """The RPN's proposals (as torchvision filters them) and its sampled anchors."""
    rpn = model.rpn
    anchors = rpn.anchor_generator(images, features)
    per_level = [o[0].numel() for o in objectness]
    flat_logits, flat_deltas = concat_box_prediction_layers(objectness, deltas)
    decoded = rpn.box_coder.decode(flat_deltas.detach(), anchors).view(len(anchors), -1, 4)
    proposals, _ = rpn.filter_proposals(decoded, flat_logits, images.image_sizes, per_level)
    labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
    reg_targets = rpn.box_coder.encode(matched, anchors)
    pos, neg = rpn.fg_bg_sampler(labels)
    pos_idx = torch.where(torch.cat(pos))[0]
    sampled = torch.cat([pos_idx, torch.where(torch.cat(neg))[0]])
    where = anchor_locations(sampled, objectness)
    samples = RPNSamples(
        len(pos_idx), torch.cat(labels)[sampled], torch.cat(reg_targets)[sampled],
        flat_logits.flatten()[sampled], flat_deltas[sampled], *where,
    )
    return proposals, samples


def anchor_locations(flat: Tensor, objectness: list[Tensor]) -> tuple[Tensor, ...]:
    """``(image, level, anchor, y, x)`` of flattened anchor indices (image, level, y, x, a order)."""
    sizes = torch.tensor([o[0].numel() for o in objectness], device=flat.device)
    offsets = torch.cumsum(sizes, 0) - sizes
    image, rest = flat // sizes.sum(), flat % sizes.sum()
    level = torch.searchsorted(offsets, rest, right=True) - 1
    within = rest - offsets[level]
    num_a = torch.tensor([o.shape[1] for o in objectness], device=flat.device)[level]
    width = torch.tensor([o.shape[3] for o in objectness], device=flat.device)[level]
    cell = within // num_a
    return image, level, within % num_a, cell // width, cell % width


def forward_roi(model: FasterRCNN, features: OrderedDict[str, Tensor], proposals: list[Tensor],
                image_sizes: list[tuple[int, int]], targets: list[dict[str, Tensor]]) -> RoISamples:
    """The RoI head on its sampled proposals (torchvision's ``select_training_samples``)."""
    heads = model.roi_heads
    proposals, _, labels, reg_targets = heads.select_training_samples(proposals, targets)
    pooled = heads.box_roi_pool(features, proposals, image_sizes)
    class_logits, box_regression = heads.box_predictor(heads.box_head(pooled))
    return RoISamples(proposals, torch.cat(labels), torch.cat(reg_targets), class_logits, box_regression)


def rpn_losses(rpn: RPNSamples) -> dict[str, Tensor]:
    """torchvision's RPN losses on the sampled anchors."""
    pos = slice(0, rpn.num_positive)
    box = F.smooth_l1_loss(rpn.deltas[pos], rpn.targets[pos], beta=1 / 9, reduction="sum")
    return {
        "loss_objectness": F.binary_cross_entropy_with_logits(rpn.logits, rpn.labels),
        "loss_rpn_box_reg": box / max(len(rpn.labels), 1),
    }


def roi_losses(roi: RoISamples) -> dict[str, Tensor]:
    """torchvision's RoI-head losses (``fastrcnn_loss``) on the sampled proposals."""
    loss_classifier, loss_box_reg = fastrcnn_loss(roi.class_logits, roi.box_regression, [roi.labels], [roi.targets])
    return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
