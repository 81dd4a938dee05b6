"""The distillation task: the student and its adaptation layers trained against a frozen teacher.

``DistillModule`` (what DDP wraps and the optimizer trains) holds the student detector, the
1x1-conv adaptation layers and the learned blocks of some hint losses (FGD's GcBlocks, MGD's
generation block); the teacher stays outside it. ``DistillTask.step`` returns one dict of
named, unweighted terms: torchvision's four detection losses and the distillation terms
(``distill_rcn_cls``, ``distill_rpn_cls``, ``distill_rcn_reg``, ``distill_rpn_reg``,
``distill_hint``); ``loss_weights`` (eq. 1, 2, 4: mu, 1 - mu, nu, gamma) are applied once, by the
engine. The exported student (``detkd export``) drops the adaptation layers and the blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN

from detkd.config import ClsTermSection, DistillSection, HintSection, RegTermSection
from detkd.distill.balance import gradient_norms, gradient_shares, module_groups
from detkd.distill.feature_losses import RelationBlocks, box_weights, generation_block
from detkd.distill.losses import DISTILL_LOSSES, bounded_l2, dkd_loss, objectness_soft_ce, teacher_l2, weighted_soft_ce
from detkd.distill.masks import object_masks
from detkd.distill.pairing import LevelPairing, align_teacher_map, map_boxes_to_teacher, scale_factors
from detkd.distill.student import StudentOutputs, gather_at_anchors, student_forward
from detkd.distill.teacher import TeacherOutputs, run_teacher, teacher_detections, teacher_roi_outputs
from detkd.errors import DetkdError

log = logging.getLogger("detkd")


class DistillModule(nn.Module):
    """The trained module: ``student`` (a torchvision FasterRCNN), ``adapters`` and ``blocks`` (the
    hint loss's learned modules, :func:`build_blocks`), both by student level."""

    def __init__(self, student: FasterRCNN, adapters: nn.ModuleDict, blocks: nn.ModuleDict | None = None) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters
        self.blocks = blocks if blocks is not None else nn.ModuleDict()

    def forward(self, images: list[Tensor], targets: list[dict]) -> StudentOutputs:
        return student_forward(self.student, images, targets)


def build_adapters(pairing: LevelPairing, channels_s: dict[str, int], channels_t: dict[str, int],
                   hint: DistillSection) -> nn.ModuleDict:
    """One 1x1 conv (student channels -> teacher channels) per hinted level (eq. 5, A)."""
    adapters = nn.ModuleDict()
    if not hint.hint.enabled or hint.hint.loss == "attention":
        return adapters
    for s, t in hinted_pairs(pairing, hint):
        if hint.hint.adaptation:
            adapters[s] = nn.Conv2d(channels_s[s], channels_t[t], kernel_size=1)
        elif channels_s[s] != channels_t[t]:
            raise DetkdError(f"distill.hint.adaptation=false needs equal channels; student level {s} has "
                             f"{channels_s[s]}, teacher level {t} has {channels_t[t]}")
    return adapters


def build_blocks(pairing: LevelPairing, channels_t: dict[str, int], terms: DistillSection) -> nn.ModuleDict:
    """The learned modules of the hint loss, one per hinted level, at the teacher's channels: FGD's
    student and teacher GcBlocks (:class:`~detkd.distill.feature_losses.RelationBlocks`), MGD's
    generation block; none for the other losses."""
    make = {"fgd": RelationBlocks, "mgd": generation_block}.get(terms.hint.loss)
    blocks = nn.ModuleDict()
    if terms.hint.enabled and make is not None:
        for s, t in hinted_pairs(pairing, terms):
            blocks[s] = make(channels_t[t])
    return blocks


def hinted_pairs(pairing: LevelPairing, terms: DistillSection) -> list[tuple[str, str]]:
    """The level pairs the hint uses (``distill.hint.levels``, or every pair)."""
    levels = terms.hint.levels
    if levels:
        unknown = sorted(set(levels) - {s for s, _ in pairing.pairs})
        if unknown:
            raise DetkdError(f"distill.hint.levels: {unknown} are not paired student levels ({pairing.describe()})")
        return [p for p in pairing.pairs if p[0] in levels]
    return list(pairing.pairs)


def loss_weights(terms: DistillSection) -> dict[str, float]:
    """Eq. 1/2/4: mu on the hard terms, (1 - mu) * weight on the soft ones (``mode: add``: 1 and
    weight), nu, gamma."""
    weights = {"loss_classifier": 1.0, "loss_box_reg": 1.0, "loss_objectness": 1.0, "loss_rpn_box_reg": 1.0}
    for head, hard in (("rcn", "loss_classifier"), ("rpn", "loss_objectness")):
        cls = getattr(terms, f"{head}_cls")
        if cls.enabled and cls.mode == "add":
            weights[f"distill_{head}_cls"] = cls.weight
        elif cls.enabled:
            weights[hard] = cls.mu
            weights[f"distill_{head}_cls"] = (1.0 - cls.mu) * cls.weight
        reg = getattr(terms, f"{head}_reg")
        if reg.enabled:
            weights[f"distill_{head}_reg"] = reg.nu
    if terms.hint.enabled:
        weights["distill_hint"] = terms.hint.gamma
    return weights


@dataclass
class DistillTask:
    """The engine's task for ``detkd distill`` (see the module docstring)."""

    module: DistillModule
    teacher: FasterRCNN
    pairing: LevelPairing
    terms: DistillSection
    loss_weights: dict[str, float]
    rpn_pairs: tuple[tuple[str, str], ...] = ()
    find_unused_parameters: bool = False
    diagnose_every: int = 0  # distill.diagnose_every: gradient shares every N steps (0: never)
    pseudo_threshold: float = 0.5  # data.unlabeled.score_threshold
    steps: int = 0
    records: list[dict] = field(default_factory=list)
    labels_unlabeled: bool = True  # the engine may give it a transfer set: the teacher labels it

    @property
    def detector(self) -> FasterRCNN:
        return self.module.student

    def step(self, model: nn.Module, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """Teacher pass; the teacher's detections as the boxes of transfer-set images; student pass
        (through ``model``, DDP-wrapped or not); all terms. The teacher draws no random numbers, so
        the student's draws are those of its baseline."""
        self.teacher.to(images[0].device)
        teacher = run_teacher(self.teacher, images)
        targets = self.label_unlabeled(images, targets, teacher)
        out: StudentOutputs = model(images, targets)
        losses = self.losses(out, teacher)
        self.steps += 1
        if self.diagnose_every and self.steps % self.diagnose_every == 0:
            self.records.append(self.diagnose(losses))
        return losses

    def label_unlabeled(self, images: list[Tensor], targets: list[dict], teacher: TeacherOutputs) -> list[dict]:
        """``targets`` with the transfer-set images' (``unlabeled``) boxes and labels replaced by the
        teacher's detections scoring at least ``pseudo_threshold`` (Hinton et al. 2015's transfer set;
        the soft terms apply to them as to every image)."""
        which = [i for i, t in enumerate(targets) if bool(t.get("unlabeled", False))]
        if not which:
            return targets
        sizes = [tuple(images[i].shape[-2:]) for i in which]
        found = teacher_detections(self.teacher, teacher, which, sizes, self.pseudo_threshold)
        targets = list(targets)
        for i, det in zip(which, found):
            targets[i] = {**targets[i], "boxes": det["boxes"], "labels": det["labels"],
                          "difficult": torch.zeros_like(det["labels"], dtype=torch.bool)}
        return targets

    def diagnose(self, losses: dict[str, Tensor]) -> dict:
        """Each term's share of the gradient norm per student module (``detkd doctor``'s balance),
        as a ``metrics.jsonl`` record; the graph is kept for the step's own backward."""
        shares = gradient_shares(gradient_norms(losses, self.loss_weights, module_groups(self.module.student)))
        return {"type": "grad_share", "shares": {t: {m: None if v is None else round(v, 5) for m, v in by.items()}
                                                 for t, by in shares.items()}}

    def pop_records(self) -> list[dict]:
        """The records made since the last call (the trainer writes them to its log)."""
        records, self.records = self.records, []
        return records

    def losses(self, out: StudentOutputs, teacher: TeacherOutputs) -> dict[str, Tensor]:
        """The detection losses of ``out`` and every enabled distillation term against ``teacher``."""
        losses = dict(out.losses)
        terms = self.terms
        if terms.rcn_cls.enabled or terms.rcn_reg.enabled:
            losses.update(self.rcn_terms(out, teacher))
        if terms.rpn_cls.enabled or terms.rpn_reg.enabled:
            losses.update(self.rpn_terms(out, teacher))
        if terms.hint.enabled:
            losses["distill_hint"] = self.hint_term(out, teacher)
        return losses

    def rcn_terms(self, out: StudentOutputs, teacher: TeacherOutputs) -> dict[str, Tensor]:
        """Soft classification and bounded regression on the student's sampled proposals."""
        roi, terms = out.roi, self.terms
        mapped = map_boxes_to_teacher(roi.proposals, scale_factors(out.image_sizes, teacher.image_sizes))
        t_logits, t_deltas = teacher_roi_outputs(self.teacher, teacher, [m.to(roi.class_logits.dtype) for m in mapped])
        result = {}
        if terms.rcn_cls.enabled:
            result["distill_rcn_cls"] = cls_term(roi.class_logits, t_logits, terms.rcn_cls, roi.labels)
        if terms.rcn_reg.enabled:
            fg = torch.where(roi.labels > 0)[0]
            cols = roi.labels[fg, None] * 4 + torch.arange(4, device=fg.device)
            s_reg = roi.box_regression[fg[:, None], cols]
            t_reg = t_deltas[fg[:, None], cols]
            result["distill_rcn_reg"] = reg_term(s_reg, t_reg, roi.targets[fg], terms.rcn_reg, roi.labels.numel())
        return result

    def rpn_terms(self, out: StudentOutputs, teacher: TeacherOutputs) -> dict[str, Tensor]:
        """The same on the RPN's sampled anchors, with the teacher's maps on the student's grid."""
        t_logits, t_deltas, valid = teacher_at_anchors(out, teacher, self.pairing, self.rpn_pairs)
        rpn, terms, result = out.rpn, self.terms, {}
        if terms.rpn_cls.enabled:
            cls = terms.rpn_cls
            bg_weight = 1.0 if cls.loss == "hinton" else cls.bg_weight  # Hinton: uniform weights
            result["distill_rpn_cls"] = objectness_soft_ce(rpn.logits[valid], t_logits[valid], bg_weight, cls.temperature)
        if terms.rpn_reg.enabled:
            pos = valid.clone()
            pos[rpn.num_positive :] = False
            result["distill_rpn_reg"] = reg_term(rpn.deltas[pos], t_deltas[pos], rpn.targets[pos], terms.rpn_reg,
                                                 int(valid.sum()))
        return result

    def hint_term(self, out: StudentOutputs, teacher: TeacherOutputs) -> Tensor:
        """Eq. 5/6 (or PKD, attention, CWD, FGD, MGD) over the hinted level pairs, weighted per level."""
        values, cells = self.hint_levels(out, teacher)
        weights = hint_level_weights(self.terms.hint, cells).to(values)
        return (values * weights).sum()

    def hint_levels(self, out: StudentOutputs, teacher: TeacherOutputs) -> tuple[Tensor, list[int]]:
        """Per hinted level pair, the unweighted hint ``[L]`` and the number of cells it averages
        over: the valid (un-padded) cells, with ``mask: objects`` only those near a box."""
        hint = self.terms.hint
        loss = DISTILL_LOSSES.get(hint.loss)
        level_index = {name: i for i, name in enumerate(out.features)}
        regions = object_masks(out.anchors, out.gt_boxes, out.objectness, hint.mask_psi) if hint.mask == "objects" else None
        values, cells = [], []
        for s, t in hinted_pairs(self.pairing, self.terms):
            feat = out.features[s]
            aligned, valid = align_teacher_map(teacher.features[t], feat.shape[-2:], out.image_sizes,
                                               teacher.image_sizes, self.pairing.student_strides[s],
                                               self.pairing.teacher_strides[t], self.pairing.mode)
            if s in self.module.adapters:
                feat = self.module.adapters[s](feat)
            region = valid if regions is None else valid & regions[level_index[s]]
            values.append(loss(feat, aligned, mask=region, **self.hint_inputs(out, s, valid)))
            cells.append(int(region.sum()))
        return torch.stack(values), cells


    def hint_inputs(self, out: StudentOutputs, level: str, valid: Tensor) -> dict[str, object]:
        """The hint loss's arguments beyond the two maps and the cells, on student ``level``:
        PKD's statistics cells, CWD's tau, FGD's box weights, GcBlocks and weights, MGD's
        generation block and weights."""
        hint = self.terms.hint
        if hint.loss == "pkd":
            return {"valid": valid}
        if hint.loss == "cwd":
            return {"tau": hint.cwd_tau}
        if hint.loss == "fgd":
            grid = tuple(out.features[level].shape[-2:])
            boxes = box_weights(out.gt_boxes or [], self.pairing.student_strides[level], grid).to(valid.device)
            return {"foreground": boxes, "relation": self.module.blocks[level], "temperature": hint.fgd_temperature,
                    "alpha": hint.fgd_alpha, "beta": hint.fgd_beta, "gamma": hint.fgd_gamma, "lam": hint.fgd_lambda}
        if hint.loss == "mgd":
            return {"generation": self.module.blocks[level], "valid": valid, "ratio": hint.mgd_ratio,
                    "alpha": hint.mgd_alpha}
        return {}


def hint_level_weights(hint: HintSection, cells: Sequence[int]) -> Tensor:
    """``[L]`` weights of the hinted levels: ``level_weights`` normalised to sum 1, else equal ones
    summing to 1 (the paper's mean), each level's share of the hinted cells (``cells``), or 1 each
    (``sum``, MMRazor's PKD)."""
    if hint.level_weights is not None:
        if len(hint.level_weights) != len(cells):
            raise DetkdError(f"distill.hint.level_weights has {len(hint.level_weights)} weights for "
                             f"{len(cells)} hinted levels")
        weights = torch.tensor(hint.level_weights, dtype=torch.float64)
    elif hint.level_weighting == "sum":
        return torch.ones(len(cells), dtype=torch.float64)
    elif hint.level_weighting == "cells":
        weights = torch.tensor(cells, dtype=torch.float64)
    else:
        weights = torch.ones(len(cells), dtype=torch.float64)
    total = weights.sum()
    return weights / total if total > 0 else torch.full_like(weights, 1.0 / max(len(cells), 1))


def cls_term(student: Tensor, teacher: Tensor, cfg: ClsTermSection, labels: Tensor | None = None) -> Tensor:
    """The configured soft classification term on ``[N, K + 1]`` logits; ``labels`` ``[N]``: the
    samples' ground-truth classes (DKD's targets)."""
    if cfg.loss == "dkd":
        if labels is None:
            raise ValueError("cls_term: dkd needs the samples' ground-truth labels")
        return dkd_loss(student, teacher, labels, cfg.dkd_alpha, cfg.dkd_beta, cfg.temperature)
    if cfg.loss == "dist":
        return DISTILL_LOSSES.get("dist")(student, teacher, tau=cfg.temperature)
    if cfg.loss == "hinton":
        return weighted_soft_ce(student, teacher, None, cfg.temperature)
    weights = torch.ones(student.shape[1], device=student.device)
    weights[0] = cfg.bg_weight
    return weighted_soft_ce(student, teacher, weights, cfg.temperature)


def reg_term(student: Tensor, teacher: Tensor, target: Tensor, cfg: RegTermSection, normalizer: int) -> Tensor:
    """Eq. 4 (``bounded``), or plain L2 to the teacher's deltas on every foreground sample (Table
    4's L2 row); both divided by ``normalizer``, eq. 1's N: all sampled anchors or proposals."""
    if cfg.bounded:
        return bounded_l2(student, teacher, target, cfg.margin, normalizer)
    return teacher_l2(student, teacher, normalizer=normalizer)


def teacher_at_anchors(out: StudentOutputs, teacher: TeacherOutputs, pairing: LevelPairing,
                       pairs: tuple[tuple[str, str], ...]) -> tuple[Tensor, Tensor, Tensor]:
    """The teacher's objectness ``[S]`` and deltas ``[S, 4]`` at the student's sampled anchors, and
    ``valid`` ``[S]``: the anchor's level has a partner with the same anchors (``pairs``, from
    :func:`~detkd.distill.pairing.rpn_pairs`) and its cell lies on both images."""
    partner = dict(pairs)
    t_index = {name: i for i, name in enumerate(teacher.features)}
    objectness: list[Tensor | None] = []
    deltas: list[Tensor | None] = []
    masks: list[Tensor | None] = []
    for lvl, s in enumerate(out.features):
        if s not in partner:
            objectness.append(None), deltas.append(None), masks.append(None)
            continue
        t = partner[s]
        args = (out.objectness[lvl].shape[-2:], out.image_sizes, teacher.image_sizes,
                pairing.student_strides[s], pairing.teacher_strides[t], pairing.mode)
        obj, ok = align_teacher_map(teacher.objectness[t_index[t]], *args)
        objectness.append(obj)
        deltas.append(align_teacher_map(teacher.rpn_deltas[t_index[t]], *args)[0])
        masks.append(ok.expand_as(obj).to(obj.dtype))
    t_obj, present = gather_at_anchors(objectness, out.rpn)
    t_deltas, _ = gather_at_anchors(deltas, out.rpn, per_anchor=4)
    inside, _ = gather_at_anchors(masks, out.rpn)
    return t_obj[:, 0], t_deltas, present & (inside[:, 0] > 0)
