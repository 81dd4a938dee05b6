"""Distillation loss terms, as pure tensor functions (no model code).

Chen et al., *Learning Efficient Object Detection Models with Knowledge Distillation*
(NeurIPS 2017), with the alternatives of ``docs/METHOD.md`` section 7:

- :func:`weighted_soft_ce` — eq. 3, the soft half of eq. 2 on the RCN's K+1 classes;
- :func:`objectness_soft_ce` — the same on the RPN's single objectness logit, read as the 2-way
  distribution (background, object) = (1 - sigma(z/T), sigma(z/T));
- :func:`bounded_l2` — eq. 4, the teacher-bounded regression term, per sample;
- :func:`teacher_l2` — the unbounded alternative of Table 4's "L2" row: regress to the teacher;
- :func:`hint_loss` — eq. 5/6, L2 or L1 between adapted student and teacher feature maps;
- :func:`pkd_loss` — Cao et al. 2022 (PKD), the hint on per-channel standardised maps;
- :func:`attention_transfer` — Zagoruyko & Komodakis 2016, a hint without adaptation;
- :func:`dist_loss` — Huang et al. 2022 (DIST), inter- and intra-class Pearson relations;
- :func:`hinton_kd` — Hinton et al. 2015, uniform-weight soft cross-entropy at T > 1;
- :func:`dkd_loss` — Zhao et al. 2022 (DKD), target and non-target class KD decoupled.

CWD, FGD and MGD (feature terms with their own learned modules) are in
:mod:`detkd.distill.feature_losses`, registered in the same :data:`DISTILL_LOSSES`.

Every function returns one unweighted scalar. The weights of the objective (eq. 1, 2, 4: the
hard/soft balance ``mu`` and ``1 - mu``, ``nu``, the hint weight ``gamma``) are applied once, by
the caller, where all terms are summed (``DistillTask.loss_weights``, summed by the engine's
``weighted_total``). There is deliberately no ``distill_cls_loss``: the hard terms of eq. 2 are
torchvision's own ``loss_classifier`` / ``loss_objectness``, so eq. 2 is the weighted sum
``mu * loss_classifier + (1 - mu) * weighted_soft_ce(...)`` (and the same for the RPN), each term
logged weighted and unweighted. Likewise eq. 4's ``L_sL1 + nu * L_b``: ``loss_box_reg`` (weight
1) plus :func:`bounded_l2` (weight nu).

Teacher inputs are constants: they are detached, so gradients reach only the student. They may
be inference tensors (a teacher run under ``torch.inference_mode``): every function first derives
new tensors from them, never saving them for backward as they are.
Normalisation, per term: the cross-entropies and the bounded L2 average over the N samples they
are given, the hints over valid cells x channels, attention transfer and DIST over images/rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detkd.registry import Registry

EPS = 1e-8


def weighted_soft_ce(
    student_logits: Tensor, teacher_logits: Tensor, class_weights: Tensor | None = None, T: float = 1.0
) -> Tensor:
    """Chen et al. eq. 3: ``-sum_c w_c P_t[c] log P_s[c]``, mean over the N samples.

    Args:
        student_logits, teacher_logits: ``[N, C]`` (C = K + 1 for the RCN, background = 0).
        class_weights: ``[C]`` w_c (the paper: 1.5 for background, 1 otherwise); None: all 1.
        T: temperature; P = softmax(Z / T). With T != 1 the loss is multiplied by T^2 (Hinton).
    Returns: a scalar; 0 for N = 0.

    Its minimiser over the student's distribution is ``P_s[c] = w_c P_t[c] / sum_k w_k P_t[k]``
    (the gradient w.r.t. the logit ``z_j`` is ``(P_s[j] sum_k w_k P_t[k] - w_j P_t[j]) / T``), so
    only with uniform weights is it the teacher's distribution itself; with ``w_0 = 1.5`` the
    optimum moves probability mass to background (docs/METHOD.md section 7b). The minimum is not
    zero (the teacher's weighted entropy).
    """
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    log_ps = F.log_softmax(student_logits / T, dim=1)
    pt = F.softmax(teacher_logits.detach() / T, dim=1)
    terms = pt * log_ps
    if class_weights is not None:
        terms = terms * class_weights.to(terms)
    return -terms.sum(dim=1).mean() * (T * T if T != 1.0 else 1.0)


def objectness_soft_ce(student_logits: Tensor, teacher_logits: Tensor, bg_weight: float = 1.5, T: float = 1.0) -> Tensor:
    """Eq. 3 on the RPN: the single logit z as (background, object) = (1 - sigma(z/T), sigma(z/T)).

    Args:
        student_logits, teacher_logits: ``[N]`` objectness logits of the same N anchors.
        bg_weight: w_0 of the background side (object side weight 1).
    Equal to :func:`weighted_soft_ce` on the logits ``[0, z]`` with weights ``(bg_weight, 1)``.
    """
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    zs, zt = student_logits / T, teacher_logits.detach() / T
    pt_obj = torch.sigmoid(zt)
    terms = bg_weight * (1 - pt_obj) * F.logsigmoid(-zs) + pt_obj * F.logsigmoid(zs)
    return -terms.mean() * (T * T if T != 1.0 else 1.0)


def bounded_l2(student: Tensor, teacher: Tensor, target: Tensor, margin: float = 0.0,
               normalizer: int | None = None) -> Tensor:
    """Chen et al. eq. 4, per sample: ``||R_s - y||^2`` if ``||R_s - y||^2 + m > ||R_t - y||^2``, else 0.

    Args:
        student, teacher, target: ``[P, 4]`` encoded box deltas of the same P foreground samples
            (RPN anchors, or RCN proposals with the deltas of their ground-truth class).
        margin: m; the student is penalised until it beats the teacher by m.
        normalizer: N of eq. 1, the number of samples of the batch, background included (as
            torchvision divides ``loss_box_reg`` and ``loss_rpn_box_reg``); default P.
    Returns: the sum of the active terms divided by N (inactive ones count in N); 0 for P = 0.
    The switch itself carries no gradient.
    """
    if student.numel() == 0:
        return student.sum() * 0.0
    err_s = (student - target).pow(2).sum(dim=1)
    err_t = (teacher.detach() - target).pow(2).sum(dim=1)
    active = (err_s.detach() + margin > err_t).to(err_s.dtype)
    return (err_s * active).sum() / max(normalizer or student.shape[0], 1)


def teacher_l2(student: Tensor, teacher: Tensor, target: Tensor | None = None,
               normalizer: int | None = None) -> Tensor:
    """The "L2" row of Chen et al.'s Table 4: ``||R_s - R_t||^2`` on every sample, the student
    regressing straight to the teacher's outputs (the mimicry that eq. 4 replaces, since a wrong
    teacher then pulls the student away from the ground truth).

    Args:
        student, teacher: ``[P, 4]`` encoded box deltas of the same P foreground samples.
        target: unused (the signature of :func:`bounded_l2`, so the two are interchangeable).
        normalizer: N of eq. 1, as in :func:`bounded_l2`; default P.
    Returns: the sum of the squared differences divided by N; 0 for P = 0.
    """
    if student.numel() == 0:
        return student.sum() * 0.0
    return (student - teacher.detach()).pow(2).sum() / max(normalizer or student.shape[0], 1)


def check_maps(name: str, student: Tensor, teacher: Tensor) -> None:
    """A feature term's student map must have the teacher's shape (adapted channels, aligned grid)."""
    if student.shape != teacher.shape:
        raise ValueError(f"{name}: student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} differ "
                         "(adapt the channels and align the grids first)")


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` ``[B, C, H, W]`` over the cells where ``mask`` ``[B, 1, H, W]`` is true."""
    if mask is None:
        return values.mean()
    weight = mask.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def hint_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, kind: str = "l2") -> Tensor:
    """Chen et al. eq. 5 (L2) / eq. 6 (L1): ``||A(V) - Z||``, per element.

    Args:
        student: ``[B, C, H, W]`` the student's guided map, already through its adaptation layer
            A (or not, for the ablation without adaptation: then C must match).
        teacher: ``[B, C, H, W]`` the hint Z, aligned to the student's grid.
        mask: ``[B, 1, H, W]`` bool, the cells inside both models' un-padded image area.
        kind: ``"l2"`` (squared error) or ``"l1"`` (absolute error).
    Returns: the error averaged over the valid cells and the channels: ``sum(mask * err) /
    (#valid cells * C)``; FitNets and Chen et al. write the (half) squared norm, a sum — the mean
    keeps the scale independent of image size and channel count (gamma absorbs the difference).
    """
    check_maps("hint", student, teacher)
    diff = student - teacher.detach()
    if kind == "l2":
        return masked_mean(diff.pow(2), mask)
    if kind == "l1":
        return masked_mean(diff.abs(), mask)
    raise ValueError(f"hint kind must be 'l2' or 'l1', got {kind!r}")


def standardize(feat: Tensor, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Each channel of ``feat`` ``[B, C, H, W]`` to zero mean and unit variance over the B images'
    cells inside ``mask`` ``[B, 1, H, W]`` (all cells if None); cells outside keep their values
    shifted and scaled alike (they are masked out by the callers)."""
    if mask is None:
        weight = torch.ones_like(feat[:, :1])
    else:
        weight = mask.to(feat.dtype)
    count = weight.sum().clamp_min(1.0)
    mean = (feat * weight).sum(dim=(0, 2, 3), keepdim=True) / count
    var = ((feat - mean).pow(2) * weight).sum(dim=(0, 2, 3), keepdim=True) / count
    return (feat - mean) / (var + eps).sqrt()


def pkd_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
    """PKD (Cao et al., NeurIPS 2022, "PKD: General Distillation Framework for Object Detectors via
    Pearson Correlation Coefficient", eq. 5-6): ``1/2 * mean((S_hat - T_hat)^2)``.

    Args:
        student: ``[B, C, H, W]`` the (adapted) student map; teacher: ``[B, C, H, W]`` the hint.
        mask: ``[B, 1, H, W]`` the cells the error is averaged over (e.g. the valid cells, or only
            those near objects).
        valid: ``[B, 1, H, W]`` the cells the per-channel statistics come from (default ``mask``):
            the un-padded area of both models.
    Each channel is standardised over the batch's valid cells (:func:`standardize`), for student
    and teacher apart; the error is then the mean over cells and channels, halved. Per channel
    this equals ``1 - Pearson(S_c, T_c)`` (on the valid cells), so the hint is blind to each
    map's scale and offset, which a plain L2 hint spends most of its signal on.
    """
    check_maps("pkd", student, teacher)
    stats = valid if valid is not None else mask
    s_hat = standardize(student, stats)
    t_hat = standardize(teacher.detach(), stats)
    return 0.5 * masked_mean((s_hat - t_hat).pow(2), mask)


def attention_map(feat: Tensor, mask: Tensor | None, p: int = 2) -> Tensor:
    """``[B, H*W]`` spatial attention sum_c |F_c|^p, zero outside ``mask``, L2-normalised per image."""
    att = feat.abs().pow(p).sum(dim=1, keepdim=True)
    if mask is not None:
        att = att * mask.to(att.dtype)
    return F.normalize(att.flatten(1), dim=1, eps=EPS)


def attention_transfer(student: Tensor, teacher: Tensor, mask: Tensor | None = None, p: int = 2) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2016) as a hint: ``||A_s - A_t||^2`` per image, mean.

    Args:
        student: ``[B, Cs, H, W]``; teacher: ``[B, Ct, H, W]`` (channel counts may differ: no
            adaptation layer is needed); mask: ``[B, 1, H, W]`` valid cells.
    Returns: the squared L2 distance of the normalised maps, summed over cells, mean over the B
    images (the paper's code averages the same over cells too; its text writes the unsquared
    norm). Invariant to the scale of either map and to channel duplication.
    """
    if student.shape[0] != teacher.shape[0] or student.shape[-2:] != teacher.shape[-2:]:
        raise ValueError(f"attention: student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} "
                         "must share batch and grid")
    diff = attention_map(student, mask, p) - attention_map(teacher.detach(), mask, p)
    return diff.pow(2).sum(dim=1).mean()


def pearson_distance(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """``1 - Pearson(a, b)`` along ``dim`` (DIST's d_p), for each slice of the other dimension."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    corr = (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim) + EPS)
    return 1.0 - corr


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = 1.0, beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """DIST (Huang et al. 2022): ``beta tau^2 L_inter + gamma tau^2 L_intra``.

    Args:
        student_logits, teacher_logits: ``[B, C]``, the RCN logits of the B sampled RoIs.
    ``L_inter`` = mean over samples of d_p across classes; ``L_intra`` = mean over classes of
    d_p across samples; P = softmax(Y / tau). d_p(u, v) = 1 - cov(u, v) / (std(u) std(v) + eps),
    so a constant row or column (zero variance) counts as uncorrelated rather than NaN. With
    fewer than two samples there is no relation across samples: returns 0.
    """
    if student_logits.shape[0] < 2:
        return student_logits.sum() * 0.0
    ps = F.softmax(student_logits / tau, dim=1)
    pt = F.softmax(teacher_logits.detach() / tau, dim=1)
    inter = pearson_distance(ps, pt, dim=1).mean()
    intra = pearson_distance(ps, pt, dim=0).mean()
    return tau * tau * (beta * inter + gamma * intra)


def hinton_kd(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """Hinton et al. 2015: :func:`weighted_soft_ce` with uniform class weights, times T^2.

    ``[N, C]`` logits. Hinton uses T > 1 (softer targets); that is the intended use, not enforced.
    """
    return weighted_soft_ce(student_logits, teacher_logits, None, T)


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 0.25,
             T: float = 1.0) -> Tensor:
    """DKD (Zhao et al., *Decoupled Knowledge Distillation*, CVPR 2022, eq. 7):
    ``T^2 (alpha TCKD + beta NCKD)``, each a mean over the N samples.

    Args:
        student_logits, teacher_logits: ``[N, C]`` (the RoI head's K + 1 classes, background 0).
        target: ``[N]`` int64, the samples' ground-truth classes (background RoIs: 0).
        alpha, beta, T: the weights and temperature; defaults: the authors' Faster R-CNN setting
            (mdistiller's detection code: 1, 0.25, 1; on CIFAR-100 they use beta 8, T 4).
    With ``p = softmax(z / T)`` and t the target: TCKD = ``KL(b_t || b_s)`` on the binary
    ``b = (p_t, 1 - p_t)`` (eq. 3); NCKD = ``KL(p^_t || p^_s)`` on ``p^ = softmax`` over the C - 1
    non-target classes (eq. 4). Classical KD is ``TCKD + (1 - p_t^teacher) NCKD`` (eq. 5); DKD
    weighs the two parts freely. Computed from log-sum-exps, so ``p_t -> 1`` stays finite.
    Returns 0 for N = 0.
    """
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    if student_logits.shape[1] < 2:
        raise ValueError(f"dkd: needs at least 2 classes, got logits of shape {tuple(student_logits.shape)}")
    target_mask = F.one_hot(target.long(), student_logits.shape[1]).bool()

    def parts(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits / T
        other = z.masked_fill(target_mask, torch.finfo(z.dtype).min)
        total = torch.logsumexp(z, dim=1, keepdim=True)
        log_binary = torch.cat([z[target_mask][:, None], torch.logsumexp(other, dim=1, keepdim=True)], 1) - total
        return log_binary, F.log_softmax(other, dim=1)

    log_bs, log_ns = parts(student_logits)
    log_bt, log_nt = parts(teacher_logits.detach())
    tckd = (log_bt.exp() * (log_bt - log_bs)).sum(dim=1).mean()
    nckd = (log_nt.exp() * (log_nt - log_ns)).masked_fill(target_mask, 0.0).sum(dim=1).mean()
    return T * T * (alpha * tckd + beta * nckd)


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistillLoss:
    """A registered loss: ``kind`` says what it compares, ``fn(student, teacher, **extra)``.

    Kinds: ``logits`` (``[N, C]``), ``labelled_logits`` (``[N, C]`` plus the ``target`` classes
    ``[N]``), ``objectness`` (``[N]``), ``regression`` (``[N, 4]`` plus a ``target``), ``feature``
    (``[B, C, H, W]`` plus an optional ``mask``), ``feature_boxes`` (a feature term that also
    takes the box weights ``foreground`` and learned ``relation`` modules: FGD) and
    ``feature_generative`` (one that also takes a learned ``generation`` module: MGD).
    """

    name: str
    kind: str
    fn: Callable[..., Tensor]

    def __call__(self, student: Tensor, teacher: Tensor, **extra: object) -> Tensor:
        return self.fn(student, teacher, **extra)


DISTILL_LOSSES: Registry[DistillLoss] = Registry("distillation loss")

for _loss in (
    DistillLoss("soft_ce", "logits", weighted_soft_ce),
    DistillLoss("hinton", "logits", hinton_kd),
    DistillLoss("dist", "logits", dist_loss),
    DistillLoss("dkd", "labelled_logits", dkd_loss),
    DistillLoss("objectness_soft_ce", "objectness", objectness_soft_ce),
    DistillLoss("bounded_l2", "regression", bounded_l2),
    DistillLoss("teacher_l2", "regression", teacher_l2),
    DistillLoss("hint_l2", "feature", lambda s, t, mask=None: hint_loss(s, t, mask, "l2")),
    DistillLoss("hint_l1", "feature", lambda s, t, mask=None: hint_loss(s, t, mask, "l1")),
    DistillLoss("attention", "feature", attention_transfer),
    DistillLoss("pkd", "feature", pkd_loss),
):
    DISTILL_LOSSES.register(_loss.name)(_loss)
