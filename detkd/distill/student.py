"""The student's training forward, opened up: torchvision's losses plus what distillation needs.

``student_forward(model, images, targets)`` runs a torchvision ``FasterRCNN`` in training mode
through the same steps, in the same order and with the same random draws as ``model(images,
targets)`` (so for the same seed the detection losses are equal, bit for bit on CPU), and returns,
beside the losses, the student's FPN features, its dense RPN maps, the RPN's sampled anchors and
the RoI head's sampled proposals with their logits, deltas, labels and regression targets (Chen et
al. section 3: the soft and bounded terms are taken on exactly the samples the hard terms use).

The steps (detectron2 style, one function each):

1. ``model.transform`` (resize, which draws from torch's RNG when ``min_size`` has several
   values; normalise; pad to a multiple of 32) -> ``ImageList`` + resized targets;
2. ``model.backbone`` -> FPN features; ``model.rpn.head`` -> objectness ``[B, A, H, W]`` and
   deltas ``[B, 4A, H, W]`` per level;
3. :func:`forward_rpn`: anchors, proposals (``filter_proposals``), anchor labels and targets,
   ``fg_bg_sampler`` (random draw no. 1);
4. :func:`forward_roi`: ``select_training_samples`` (random draw no. 2), RoI pool, box head, predictor;
5. :func:`rpn_losses` and :func:`roi_losses`: torchvision's four losses on those samples.

Anchor layout. torchvision's RPN head gives per level ``objectness [B, A, H, W]`` and
``deltas [B, 4A, H, W]`` (channels ``4a .. 4a+3`` are anchor a's ``(dx, dy, dw, dh)``).
``concat_box_prediction_layers`` flattens them image by image, level by level, and within a level
in ``(y, x, a)`` order, so the flat index of anchor ``a`` at cell ``(y, x)`` of level ``l`` in
image ``b`` is ``b * N + offset_l + (y * W_l + x) * A_l + a`` with ``N`` the anchors of one image
and ``offset_l`` the anchors of the levels before ``l``. ``anchor_generator`` lists its anchors in
the same order. :class:`RPNSamples` gives both the flat index and the decoded location.

torchvision internals relied on (checked against torchvision 0.29.1; re-check them on upgrade):
``GeneralizedRCNN.forward`` (the order of the steps, its target checks), ``model.transform``
(``GeneralizedRCNNTransform``), ``RegionProposalNetwork.{head, anchor_generator, box_coder,
filter_proposals, assign_targets_to_anchors, fg_bg_sampler, compute_loss}`` (the loss is rebuilt in
:func:`rpn_losses`: BCE on the sampled anchors, smooth-L1 with ``beta=1/9`` summed over the
positives / number sampled), ``rpn.concat_box_prediction_layers`` (the flat order above),
``RoIHeads.{select_training_samples, box_roi_pool, box_head, box_predictor}`` and
``roi_heads.fastrcnn_loss``. ``tests/distill/test_student.py`` fails if any of them drifts.
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
    """The S anchors the RPN loss samples over the batch, the ``num_positive`` positives first.

    ``index`` ``[S]``: flat anchor index (module docstring); ``labels`` ``[S]`` float (1 object,
    0 background); ``targets`` ``[S, 4]``: ``rpn.box_coder``-encoded deltas to the matched ground
    truth (meaningless for background anchors); ``anchors`` ``[S, 4]``: the anchor boxes, xyxy in the
    student's resized frame; ``logits`` ``[S]`` and ``deltas`` ``[S, 4]``: the student's outputs
    there (with grad). Where each anchor sits, all int64 ``[S]``: ``image`` (b), ``level`` (index
    into the FPN levels, in ``features`` order), ``anchor`` (a of A), ``y``, ``x`` — so that
    ``objectness[level][image, anchor, y, x] == logits`` and
    ``rpn_deltas[level][image, 4*anchor : 4*anchor + 4, y, x] == deltas``.
    """

    num_positive: int
    index: Tensor
    labels: Tensor
    targets: Tensor
    anchors: Tensor
    logits: Tensor
    deltas: Tensor
    image: Tensor
    level: Tensor
    anchor: Tensor
    y: Tensor
    x: Tensor


@dataclass
class RoISamples:
    """The RoI head's sampled proposals (ground-truth boxes included, as torchvision adds them).

    ``proposals``: per image ``[N_i, 4]`` xyxy in the student's resized frame; ``labels``
    ``[sum N_i]`` int64 (0 background, 1..K); ``targets`` ``[sum N_i, 4]``:
    ``roi_heads.box_coder``-encoded deltas to the matched ground truth; ``class_logits``
    ``[sum N_i, K + 1]`` and ``box_regression`` ``[sum N_i, 4 (K + 1)]`` (with grad; class c's
    deltas are columns ``4c .. 4c+3``). Rows follow ``proposals``, image by image.
    """

    proposals: list[Tensor]
    labels: Tensor
    targets: Tensor
    class_logits: Tensor
    box_regression: Tensor


@dataclass
class StudentOutputs:
    """One training pass of the student.

    ``losses``: torchvision's dict (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``,
    ``loss_box_reg``), unweighted; ``image_sizes``: per image ``(h, w)`` after the student's
    resize; ``padded_shape``: ``(H, W)`` of the padded batch; ``features``: FPN maps by level name
    ``[B, C, H_l, W_l]`` (with grad); ``objectness`` / ``rpn_deltas``: per level, in ``features``
    order, ``[B, A, H_l, W_l]`` / ``[B, 4A, H_l, W_l]`` (with grad); ``rpn`` / ``roi``: the samples;
    ``anchors``: ``[N, 4]`` every anchor of one image in the flat order (the same for every image
    of a batch: torchvision lays them on the padded grid), xyxy in the student's resized frame;
    ``gt_boxes``: per image ``[G_i, 4]``, the ground truth in that frame.
    """

    losses: dict[str, Tensor]
    image_sizes: list[tuple[int, int]]
    padded_shape: tuple[int, int]
    features: OrderedDict[str, Tensor]
    objectness: list[Tensor]
    rpn_deltas: list[Tensor]
    rpn: RPNSamples
    roi: RoISamples
    anchors: Tensor | None = None
    gt_boxes: list[Tensor] | None = None


def student_forward(model: FasterRCNN, images: Sequence[Tensor], targets: Sequence[dict[str, Any]]) -> StudentOutputs:
    """``model(images, targets)`` in training mode, step by step (see the module docstring).

    Args:
        model: a torchvision ``FasterRCNN`` in training mode.
        images: float ``[3, H_i, W_i]`` in [0, 1], any sizes.
        targets: per image ``boxes`` ``[N_i, 4]`` float xyxy (``N_i`` may be 0) and ``labels``
            ``[N_i]`` int64 in 1..K; other keys are carried along and ignored, as torchvision does.
    """
    check_inputs(model, targets)
    image_list, resized = model.transform(list(images), [dict(t) for t in targets])
    check_boxes(resized)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    objectness, deltas = model.rpn.head(list(features.values()))
    proposals, rpn, anchors = forward_rpn(model, image_list, list(features.values()), objectness, deltas, resized)
    roi = forward_roi(model, features, proposals, image_list.image_sizes, resized)
    losses = {**roi_losses(roi), **rpn_losses(rpn)}
    sizes = [(int(h), int(w)) for h, w in image_list.image_sizes]
    padded = (int(image_list.tensors.shape[-2]), int(image_list.tensors.shape[-1]))
    return StudentOutputs(losses, sizes, padded, features, objectness, deltas, rpn, roi, anchors,
                          [t["boxes"] for t in resized])


def check_inputs(model: FasterRCNN, targets: Sequence[dict[str, Any]]) -> None:
    """The checks ``GeneralizedRCNN.forward`` and ``RoIHeads.forward`` make before any work."""
    if not model.training:
        raise ValueError("student_forward runs the training pass: call model.train() first")
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} needs 'boxes' and 'labels' (has {sorted(t)})")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            got = getattr(boxes, "shape", type(boxes))
            raise ValueError(f"target {i}: boxes must be a tensor of shape [N, 4], got {got}")
        if not boxes.is_floating_point():
            raise TypeError(f"target {i}: boxes must be of float type, got {boxes.dtype}")
        if labels.dtype != torch.int64:
            raise TypeError(f"target {i}: labels must be of int64 type, got {labels.dtype}")


def check_boxes(targets: Sequence[dict[str, Tensor]]) -> None:
    """torchvision's degenerate-box check, on the resized boxes as torchvision makes it."""
    for i, t in enumerate(targets):
        bad = (t["boxes"][:, 2:] <= t["boxes"][:, :2]).any(dim=1)
        if bad.any():
            box = t["boxes"][torch.where(bad)[0][0]].tolist()
            raise ValueError(f"All bounding boxes should have positive height and width. "
                             f"Found invalid box {box} for target at index {i}.")


def forward_rpn(model: FasterRCNN, images: ImageList, features: list[Tensor], objectness: list[Tensor],
                deltas: list[Tensor], targets: list[dict[str, Tensor]]) -> tuple[list[Tensor], RPNSamples, Tensor]:
    """``RegionProposalNetwork.forward`` in training mode, keeping its samples.

    Returns the proposals per image ``[P_i, 4]`` (after ``filter_proposals``: top-n, NMS, no grad),
    the sampled anchors and the anchors of one image ``[N, 4]`` (all images share them).
    """
    rpn = model.rpn
    anchors = rpn.anchor_generator(images, features)  # per image [N, 4], the flat order
    per_level = [o[0].numel() for o in objectness]  # A * H * W, as torchvision counts them
    flat_logits, flat_deltas = concat_box_prediction_layers(objectness, deltas)  # [B*N, 1], [B*N, 4]
    decoded = rpn.box_coder.decode(flat_deltas.detach(), anchors).view(len(anchors), -1, 4)
    proposals, _ = rpn.filter_proposals(decoded, flat_logits, images.image_sizes, per_level)
    labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
    reg_targets = rpn.box_coder.encode(matched, anchors)
    pos, neg = rpn.fg_bg_sampler(labels)
    pos_idx = torch.where(torch.cat(pos, dim=0))[0]
    index = torch.cat([pos_idx, torch.where(torch.cat(neg, dim=0))[0]])
    samples = RPNSamples(
        len(pos_idx), index, torch.cat(labels)[index], torch.cat(reg_targets)[index], torch.cat(anchors)[index],
        flat_logits.flatten()[index], flat_deltas[index], *anchor_locations(index, objectness),
    )
    return proposals, samples, anchors[0]


def anchor_locations(index: Tensor, objectness: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(image, level, anchor, y, x)``, each ``[S]``, of flat anchor indices ``[S]``.

    ``objectness``: the per-level maps ``[B, A_l, H_l, W_l]`` that fix the layout (module docstring).
    """
    device = index.device
    sizes = torch.tensor([o[0].numel() for o in objectness], device=device)
    offsets = torch.cumsum(sizes, 0) - sizes
    image, rest = index // sizes.sum(), index % sizes.sum()
    level = torch.searchsorted(offsets, rest, right=True) - 1
    within = rest - offsets[level]
    num_a = torch.tensor([o.shape[1] for o in objectness], device=device)[level]
    width = torch.tensor([o.shape[3] for o in objectness], device=device)[level]
    cell = within // num_a
    return image, level, within % num_a, cell // width, cell % width


def gather_at_anchors(maps: Sequence[Tensor | None], samples: RPNSamples, per_anchor: int = 1) -> tuple[Tensor, Tensor]:
    """Values of per-level maps at the sampled anchors' locations.

    Args:
        maps: one per student level (``features`` order), ``[B, A * per_anchor, H_l, W_l]`` on the
            student's level-``l`` grid (e.g. a teacher map brought there by
            ``detkd.distill.pairing.align_teacher_map``), or None for a level without a partner.
        per_anchor: 1 for objectness, 4 for deltas.
    Returns:
        ``values`` ``[S, per_anchor]`` (zero where absent) and ``present`` ``[S]`` bool.
    """
    ref = next((m for m in maps if m is not None), None)
    if ref is None:
        raise ValueError("gather_at_anchors: every level's map is None")
    values = ref.new_zeros(len(samples.index), per_anchor)
    present = torch.zeros(len(samples.index), dtype=torch.bool, device=samples.index.device)
    for level, m in enumerate(maps):
        at = torch.where(samples.level == level)[0]
        if m is None or len(at) == 0:
            continue
        b, _, h, w = m.shape
        view = m.reshape(b, -1, per_anchor, h, w)
        values = values.index_put((at,), view[samples.image[at], samples.anchor[at], :, samples.y[at], samples.x[at]])
        present[at] = True
    return values, present


def forward_roi(model: FasterRCNN, features: OrderedDict[str, Tensor], proposals: list[Tensor],
                image_sizes: list[tuple[int, int]], targets: list[dict[str, Tensor]]) -> RoISamples:
    """``RoIHeads.forward`` in training mode on torchvision's sampled proposals, keeping them."""
    heads = model.roi_heads
    proposals, _, labels, reg_targets = heads.select_training_samples(proposals, targets)
    pooled = heads.box_roi_pool(features, proposals, image_sizes)  # [sum N_i, C, 7, 7]
    class_logits, box_regression = heads.box_predictor(heads.box_head(pooled))
    return RoISamples(proposals, torch.cat(labels), torch.cat(reg_targets), class_logits, box_regression)


def rpn_losses(rpn: RPNSamples) -> dict[str, Tensor]:
    """``RegionProposalNetwork.compute_loss`` on the sampled anchors (the same sums, same order)."""
    pos = slice(0, rpn.num_positive)
    box = F.smooth_l1_loss(rpn.deltas[pos], rpn.targets[pos], beta=1 / 9, reduction="sum")
    return {
        "loss_objectness": F.binary_cross_entropy_with_logits(rpn.logits, rpn.labels),
        "loss_rpn_box_reg": box / rpn.index.numel(),
    }


def roi_losses(roi: RoISamples) -> dict[str, Tensor]:
    """torchvision's RoI-head losses (``fastrcnn_loss``) on the sampled proposals."""
    loss_classifier, loss_box_reg = fastrcnn_loss(roi.class_logits, roi.box_regression, [roi.labels], [roi.targets])
    return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
