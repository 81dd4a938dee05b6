"""``run_doctor``: the student, teacher and batches of a distillation config, measured.

The steps:

1. build the distillation task as ``detkd distill`` does (seeded; ``student`` loads a checkpoint
   of a run midway: its ``module`` with the adapters, or its plain ``model``);
2. pick ``batches * train.batch_size`` training images, evenly spread over the split, without
   augmentation, and score the teacher on them (VOC AP50);
3. per batch: the student's training pass and the teacher's pass, the probes
   (:mod:`.probes`) and one gradient per term (:mod:`.balance`);
4. sum up, then verdicts and advice (:mod:`.advice`).

Nothing is written (the caller writes the report where it is told); the weights are not changed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from detkd.config import DistillConfig, config_to_dict
from detkd.data.dataset import collate
from detkd.data.from_config import build_eval_dataset
from detkd.distill.balance import gradient_norms, gradient_shares, mean_norms, module_groups, total_gradient_norm
from detkd.distill.build import build_distill_task
from detkd.doctor import probes
from detkd.doctor.advice import diagnose
from detkd.engine.inference import predict
from detkd.engine.trainer import seed_everything
from detkd.errors import DetkdError
from detkd.evaluation.build import evaluate_predictions
from detkd.utils.checkpoint import read_checkpoint

log = logging.getLogger("detkd")

DEFAULT_BATCHES = 8


def run_doctor(cfg: DistillConfig, batches: int = DEFAULT_BATCHES, student: str | None = None) -> dict[str, Any]:
    """The doctor's report of ``cfg`` (see :mod:`detkd.doctor` for what it holds)."""
    if batches < 1:
        raise DetkdError(f"--batches: at least 1 batch is needed, got {batches}")
    seed_everything(cfg.seed)
    dataset = build_eval_dataset(cfg.data, split=cfg.data.train_split)
    task = build_distill_task(cfg, len(dataset.classes) + 1)
    if student:
        load_student(task, student)
    picked = pick_images(len(dataset), batches * cfg.train.batch_size)
    loader = DataLoader(Subset(dataset, picked), batch_size=cfg.train.batch_size, collate_fn=collate)
    log.info("doctor: %d batches of %d training images (%s), teacher %s", len(loader), cfg.train.batch_size,
             cfg.data.train_split, cfg.teacher.checkpoint)
    report = measure(task, loader, cfg.train.clip_grad_norm)
    report["teacher"]["ap50"] = teacher_ap50(task.teacher, dataset, picked)
    report.update(batches=len(loader), images=len(picked), student=student)
    verdicts, advice = diagnose(report, config_to_dict(cfg.distill))
    report.update(verdicts=verdicts, advice=advice)
    return report


def load_student(task: Any, path: str) -> None:
    """A student checkpoint into the task: ``module`` (student and adapters) or ``model``."""
    run = read_checkpoint(path)
    try:
        if run.module is not None:
            task.module.load_state_dict(run.module)
        else:
            task.module.student.load_state_dict(run.model_state)
    except (RuntimeError, KeyError) as e:
        raise DetkdError(f"{path}: does not fit this config's student ({str(e).splitlines()[0]})") from None


def pick_images(size: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``range(size)`` (all of them if fewer)."""
    if size == 0:
        raise DetkdError("the training split holds no images")
    return sorted(set(np.linspace(0, size - 1, min(wanted, size)).round().astype(int).tolist()))


def teacher_ap50(teacher: torch.nn.Module, dataset: Any, picked: list[int]) -> float | None:
    """The teacher's VOC AP50 on the picked images (its own inference, as ``detkd eval`` runs it)."""
    loader = DataLoader(Subset(dataset, picked), batch_size=1, collate_fn=collate)
    predictions = predict(teacher, loader, next(teacher.parameters()).device)
    index = dataclasses.replace(dataset.index, records=[dataset.index.records[i] for i in picked])
    return evaluate_predictions(index, predictions, families=["voc"])["voc"]["mAP"]


def measure(task: Any, loader: DataLoader, clip: float | None = None) -> dict[str, Any]:
    """Run the probes and the per-term gradients on every batch, and sum them up."""
    values: dict[str, list[torch.Tensor]] = defaultdict(list)
    norms, totals, raw, constant = [], [], defaultdict(list), defaultdict(list)
    groups = module_groups(task.module.student)
    task.module.train()
    for images, targets in loader:
        out = task.module(images, targets)
        view = probes.teacher_view(task.teacher, images, targets)
        for probe in (probes.roi_competence, probes.anchor_match, probes.gt_score_gaps):
            for key, value in probe(task, out, view).items():
                values[key].append(value.detach().float().cpu())
        for key, value in probes.rpn_competence(task.teacher, view).items():
            values[key].append(value.cpu())
        losses = task.losses(out, view.outputs)
        for name, value in losses.items():
            raw[name].append(float(value.detach()))
        norms.append(gradient_norms(losses, task.loss_weights, groups))
        totals.append(total_gradient_norm(losses, task.loss_weights, groups))
        if task.terms.hint.enabled:
            for level, share in probes.hint_constant_share(task, out, view).items():
                constant[level].append(share)
    flat = {k: torch.cat(v) for k, v in values.items()}
    return {"teacher": teacher_summary(task, flat), "alignment": alignment_summary(task, flat),
            "terms": terms_summary(task.loss_weights, raw, mean_norms(norms)),
            "gradient": {"total_norm": float(np.median(totals)), "clip_grad_norm": clip},
            "hint": {"constant_share": {k: float(np.mean(v)) for k, v in constant.items()}}}


def mean_of(values: dict[str, torch.Tensor], key: str) -> float | None:
    v = values.get(key)
    return float(v.mean()) if v is not None and v.numel() else None


def teacher_summary(task: Any, v: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``teacher`` section of the report (AP50 is added by the caller)."""
    return {"ap50": None, "pos_p_true": mean_of(v, "p_true"), "pos_acc": mean_of(v, "correct"),
            "pos_argmax_bg": mean_of(v, "argmax_bg"), "neg_p_bg": mean_of(v, "neg_p_bg"),
            "rpn_separation": probes.auc(v["rpn_pos"], v["rpn_neg"]),
            "rpn_pos_score": mean_of(v, "rpn_pos"), "rpn_neg_score": mean_of(v, "rpn_neg"),
            "positive_rois": int(v["p_true"].numel()), "negative_rois": int(v["neg_p_bg"].numel()),
            "pos_optimum_p_true": mean_of(v, "optimum"), "pos_optimum_p_true_w1": optimum_at_w1(task, v)}


def optimum_at_w1(task: Any, v: dict[str, torch.Tensor]) -> float | None:
    """The student's best P(true) on positives were the background weight 1 (other weights as set)."""
    if "optimum" not in v or not v["p_true"].numel():
        return None
    # with w0 = 1 the optimum depends on P_t(true) only: (a + b p) / (a + b)
    hard, soft = task.loss_weights.get("loss_classifier", 1.0), task.loss_weights["distill_rcn_cls"]
    return float(((hard + soft * v["p_true"]) / (hard + soft)).mean())


def alignment_summary(task: Any, v: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``alignment`` section: the pairing, anchor matches and the ground-truth score gaps."""
    pairing = task.pairing
    pairs = [{"student": s, "teacher": t, "cell_ratio": pairing.student_strides[s] / pairing.scale / pairing.teacher_strides[t]}
             for s, t in pairing.pairs]
    gaps = [g for g in (mean_of(v, "rpn_gap"), mean_of(v, "roi_gap")) if g is not None]
    return {"pairing": pairing.describe(), "mode": pairing.mode, "scale": pairing.scale, "pairs": pairs,
            "rpn_pairs": [list(p) for p in task.rpn_pairs], "anchor_match_share": mean_of(v, "matched"),
            "mapped_gt_score_gap": max(gaps) if gaps else None, "rpn_gt_score_gap": mean_of(v, "rpn_gap"),
            "roi_gt_score_gap": mean_of(v, "roi_gap"), "rpn_anchor_iou": mean_of(v, "rpn_iou")}


def terms_summary(weights: dict[str, float], raw: dict[str, list[float]],
                  norms: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per term: mean raw value, weight, weighted value, gradient norms and shares per module."""
    shares = gradient_shares(norms)
    out = {}
    for name, values in raw.items():
        mean = float(np.mean(values))
        out[name] = {"raw": mean, "weight": weights.get(name, 1.0), "weighted": weights.get(name, 1.0) * mean,
                     "grad_share": shares[name], "grad_norm": norms[name]}
    return out
