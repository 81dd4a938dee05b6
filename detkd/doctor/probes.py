"""The doctor's measurements on one batch: what the teacher knows, and whether the distillation
code reads the teacher where the student looks.

Every function takes the distillation task, the student's training pass (``StudentOutputs``) and
the teacher's pass (:class:`TeacherView`) on the same batch, and returns 1-D tensors (one value a
sampled RoI, anchor or ground-truth box) that :mod:`detkd.doctor.run` concatenates over batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import box_iou

from detkd.distill.pairing import align_teacher_map, map_boxes_to_teacher, scale_factors
from detkd.distill.student import RPNSamples, StudentOutputs, anchor_locations
from detkd.distill.task import DistillTask, hinted_pairs, teacher_at_anchors
from detkd.distill.teacher import TeacherOutputs, teacher_roi_outputs

Values = dict[str, Tensor]


@dataclass
class TeacherView:
    """The teacher's pass on a batch, with what the probes need beyond :class:`TeacherOutputs`:
    its padded image list and the ground truth resized into its frame."""

    outputs: TeacherOutputs
    images: ImageList
    targets: list[dict[str, Tensor]]


@torch.no_grad()
def teacher_view(teacher: FasterRCNN, images: Sequence[Tensor], targets: Sequence[dict]) -> TeacherView:
    """The teacher's dense outputs as :func:`detkd.distill.teacher.run_teacher` computes them."""
    boxes = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    image_list, resized = teacher.transform(list(images), boxes)
    features = teacher.backbone(image_list.tensors)
    objectness, deltas = teacher.rpn.head(list(features.values()))
    sizes = [tuple(s) for s in image_list.image_sizes]
    return TeacherView(TeacherOutputs(sizes, features, objectness, deltas), image_list, resized)


@torch.no_grad()
def roi_competence(task: DistillTask, out: StudentOutputs, view: TeacherView) -> Values:
    """The teacher's softmax on the student's sampled RoIs: on positives ``p_true``, ``correct``
    (argmax is the label), ``argmax_bg``, ``optimum`` (the student's best P(true) under the
    configured classification objective, :func:`objective_optimum`); on negatives ``neg_p_bg``."""
    roi = out.roi
    mapped = map_boxes_to_teacher(roi.proposals, scale_factors(out.image_sizes, view.outputs.image_sizes))
    logits, _ = teacher_roi_outputs(task.teacher, view.outputs, mapped)
    probs = logits.float().softmax(dim=1)
    pos = roi.labels > 0
    labels = roi.labels[pos]
    p_pos = probs[pos]
    values = {"p_true": p_pos[torch.arange(len(labels)), labels], "correct": (p_pos.argmax(1) == labels).float(),
              "argmax_bg": (p_pos.argmax(1) == 0).float(), "neg_p_bg": probs[~pos, 0]}
    optimum = objective_optimum(task, p_pos, labels)
    if optimum is not None:
        values["optimum"] = optimum
    return values


def objective_optimum(task: DistillTask, p_teacher: Tensor, labels: Tensor, bg_weight: float | None = None) -> Tensor | None:
    """``[P]`` the student's P(true class) at the minimum of ``a * CE(y) + b * soft_CE_w(P_t)`` on
    each positive, ``q_c = (a [c = y] + b w_c P_t[c]) / sum_k (...)`` (eq. 2 with eq. 3's
    weights; a, b the configured weights of ``loss_classifier`` and ``distill_rcn_cls``); None
    for a soft term that is not a T = 1 cross-entropy (the optimum is then not closed-form)."""
    cls = task.terms.rcn_cls
    if not cls.enabled or cls.loss != "soft_ce" or cls.temperature != 1.0:
        return None
    hard, soft = task.loss_weights.get("loss_classifier", 1.0), task.loss_weights["distill_rcn_cls"]
    weights = torch.ones(p_teacher.shape[1], dtype=p_teacher.dtype, device=p_teacher.device)
    weights[0] = cls.bg_weight if bg_weight is None else bg_weight
    mass = soft * weights * p_teacher
    mass[torch.arange(len(labels)), labels] += hard
    return mass[torch.arange(len(labels)), labels] / mass.sum(dim=1)


@torch.no_grad()
def rpn_competence(teacher: FasterRCNN, view: TeacherView) -> Values:
    """The teacher's objectness on its own anchors, split by its own anchor labels: ``rpn_pos``
    (IoU >= fg threshold with a box) and ``rpn_neg`` (below the bg threshold)."""
    outputs = view.outputs
    anchors = teacher.rpn.anchor_generator(view.images, list(outputs.features.values()))
    labels, _ = teacher.rpn.assign_targets_to_anchors(anchors, view.targets)
    flat, _ = concat_box_prediction_layers(list(outputs.objectness), list(outputs.rpn_deltas))
    scores, labels = flat.flatten().float().sigmoid(), torch.cat(labels)
    return {"rpn_pos": scores[labels == 1], "rpn_neg": scores[labels == 0]}


def auc(positive: Tensor, negative: Tensor) -> float | None:
    """The probability that a positive scores above a negative (ties count half): Mann-Whitney U
    over average ranks. None without both kinds."""
    if positive.numel() == 0 or negative.numel() == 0:
        return None
    scores = torch.cat([positive, negative]).double()
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based ranks, ties averaged
    ranks = average_rank[inverse]
    n_pos, n_neg = positive.numel(), negative.numel()
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@torch.no_grad()
def anchor_match(task: DistillTask, out: StudentOutputs, view: TeacherView) -> Values:
    """``matched`` ``[S]``: 1 where a sampled student anchor found its teacher anchor (a paired
    level with the same anchors, inside both images); all 0 when no level pairs for the RPN."""
    if not task.rpn_pairs:
        return {"matched": torch.zeros(len(out.rpn.index))}
    _, _, valid = teacher_at_anchors(out, view.outputs, task.pairing, task.rpn_pairs)
    return {"matched": valid.float()}


@torch.no_grad()
def gt_score_gaps(task: DistillTask, out: StudentOutputs, view: TeacherView) -> Values:
    """How the teacher scores each ground-truth box through the distillation code against how it
    scores it found independently in its own frame.

    ``roi_gap``: ``|P_t(true)|`` of the box mapped from the student's frame
    (``map_boxes_to_teacher``) minus that of the box resized by the teacher itself. ``rpn_gap``:
    the student's best anchor for the box, read through the level pairing and grid alignment
    (``teacher_at_anchors``, what the RPN terms use), against the teacher's anchor that best
    overlaps that anchor's box in the teacher's frame, looked up directly; ``rpn_iou`` is that
    overlap (1 when the two models' anchors correspond).
    """
    scales = scale_factors(out.image_sizes, view.outputs.image_sizes)
    mapped = map_boxes_to_teacher(out.gt_boxes, scales)
    labels = torch.cat([t["labels"] for t in view.targets])
    own = [t["boxes"] for t in view.targets]
    p_mapped = teacher_roi_outputs(task.teacher, view.outputs, mapped)[0].float().softmax(1)
    p_own = teacher_roi_outputs(task.teacher, view.outputs, own)[0].float().softmax(1)
    rows = torch.arange(len(labels))
    values = {"roi_gap": (p_mapped[rows, labels] - p_own[rows, labels]).abs()}
    if task.rpn_pairs and len(labels):
        values.update(rpn_gap(task, out, view, scales))
    return values


def rpn_gap(task: DistillTask, out: StudentOutputs, view: TeacherView, scales: Tensor) -> Values:
    """``rpn_gap`` and ``rpn_iou`` of :func:`gt_score_gaps`, for the boxes whose best student anchor
    lies on a level paired for the RPN."""
    best = torch.cat([box_iou(b, out.anchors).argmax(dim=1) for b in out.gt_boxes])
    image = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(out.gt_boxes)])
    samples = at_anchors(out, image * len(out.anchors) + best)
    t_obj, _, valid = teacher_at_anchors(dataclasses.replace(out, rpn=samples), view.outputs, task.pairing,
                                         task.rpn_pairs)
    t_anchors = task.teacher.rpn.anchor_generator(view.images, list(view.outputs.features.values()))[0]
    boxes = out.anchors[best] * scales[image][:, [1, 0, 1, 0]].to(out.anchors)
    overlap = torch.stack([box_iou(box[None], t_anchors)[0] for box in boxes])
    iou, nearest = overlap.max(dim=1)
    level, anchor, y, x = anchor_locations(image * len(t_anchors) + nearest, view.outputs.objectness)[1:]
    own = torch.stack([view.outputs.objectness[lv][i, a, yy, xx]
                       for i, lv, a, yy, xx in zip(image.tolist(), level.tolist(), anchor.tolist(), y.tolist(), x.tolist())])
    gap = (t_obj.float().sigmoid() - own.float().sigmoid()).abs()
    return {"rpn_gap": gap[valid], "rpn_iou": iou[valid].float()}


def at_anchors(out: StudentOutputs, index: Tensor) -> RPNSamples:
    """:class:`RPNSamples` of the given flat anchor indices (labelled positive, no targets)."""
    image, level, anchor, y, x = anchor_locations(index, out.objectness)
    logits = torch.stack([out.objectness[lv][i, a, yy, xx].detach()
                          for i, lv, a, yy, xx in zip(image.tolist(), level.tolist(), anchor.tolist(), y.tolist(), x.tolist())])
    zeros = torch.zeros(len(index), 4, dtype=logits.dtype, device=logits.device)
    anchors = out.anchors[index % len(out.anchors)]
    return RPNSamples(len(index), index, torch.ones_like(logits), zeros, anchors, logits, zeros, image, level, anchor, y, x)


@torch.no_grad()
def hint_constant_share(task: DistillTask, out: StudentOutputs, view: TeacherView) -> dict[str, float]:
    """Per hinted teacher level: the share of its map's variance (over the valid cells of the
    student's grid) that is a per-channel constant, ``sum_c n (mu_c - mu)^2 / sum (x - mu)^2``:
    what a 1x1 adapter's bias matches without looking at the image."""
    shares = {}
    for s, t in hinted_pairs(task.pairing, task.terms):
        feat = out.features[s]
        aligned, valid = align_teacher_map(view.outputs.features[t], feat.shape[-2:], out.image_sizes,
                                           view.outputs.image_sizes, task.pairing.student_strides[s],
                                           task.pairing.teacher_strides[t], task.pairing.mode)
        cells = aligned.float().permute(1, 0, 2, 3)[:, valid[:, 0]]  # [C, n]
        total = (cells - cells.mean()).pow(2).sum()
        between = cells.shape[1] * (cells.mean(dim=1) - cells.mean()).pow(2).sum()
        shares[t] = float(between / total) if total > 0 else 0.0
    return shares
