"""Feature distillation terms of 2021-2022 for detectors: CWD, FGD and MGD, on paired FPN levels.

- :func:`cwd_loss` — Shu et al., *Channel-wise Knowledge Distillation for Dense Prediction*
  (ICCV 2021), eq. 3-4;
- :func:`fgd_loss` — Yang et al., *Focal and Global Knowledge Distillation for Detectors*
  (CVPR 2022), eq. 1-10, with :class:`GcBlock` (its global relation module) and
  :func:`box_weights` (its foreground scale mask);
- :func:`mgd_loss` — Yang et al., *Masked Generative Distillation* (ECCV 2022), eq. 1-3, with
  :func:`generation_block`.

Every function takes one level pair as the hints do (``detkd.distill.task``): the student's map
``[B, C, H, W]`` already through its 1x1 adaptation layer, the teacher's map brought onto the
student's grid (``detkd.distill.pairing.align_teacher_map``: zero outside ``valid``), and the
cells to compare. The papers take their maps on the padded batch; here every sum, softmax and
count runs over the valid (un-padded) cells only, so padding neither dilutes nor adds a term.
FGD and MGD follow their papers' reduction: a *sum* over cells and channels divided by the batch
size B, with the papers' small weights (alpha, beta, ... ~1e-5) that assume it; the authors'
code sums the per-level losses (``distill.hint.level_weighting: sum``, ``gamma: 1``). The learned
modules (FGD's GcBlocks, MGD's generation block) live in the distillation module beside the
adapters and are dropped at export.

Teacher inputs are constants: they are detached before use, so no gradient reaches them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkd.distill.losses import DISTILL_LOSSES, DistillLoss, check_maps


def cells_of(feat: Tensor, mask: Tensor | None) -> Tensor:
    """``[B, 1, H, W]`` float: ``mask`` as weights, or ones for every cell of ``feat``."""
    if mask is None:
        return torch.ones_like(feat[:, :1])
    return mask.to(feat.dtype)


def masked_softmax(logits: Tensor, weight: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``(softmax, log_softmax)`` of ``logits`` along ``dim`` over the entries where ``weight`` > 0
    (both zero elsewhere); an all-zero slice gives zeros, not NaN."""
    inside = weight > 0
    log_p = F.log_softmax(logits.masked_fill(~inside, torch.finfo(logits.dtype).min), dim=dim)
    log_p = torch.where(inside, log_p, torch.zeros_like(log_p))
    return torch.where(inside, log_p.exp(), torch.zeros_like(log_p)), log_p


# --- CWD ---------------------------------------------------------------------------------------


def cwd_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, tau: float = 1.0) -> Tensor:
    """CWD (Shu et al. 2021, eq. 3-4): ``tau^2 / (C B) sum_{b,c} KL(phi(T_bc) || phi(S_bc))``.

    Args:
        student: ``[B, C, H, W]`` the adapted student map; teacher: ``[B, C, H, W]`` the aligned map.
        mask: ``[B, 1, H, W]`` bool, the cells of each channel's distribution (valid cells, or
            those near objects); None: all.
        tau: the temperature; ``phi(y_c) = softmax_i(y_{c,i} / tau)`` over the cells i.
    Returns: the KL divergences from teacher to student of every image's and channel's spatial
    distribution, summed, times tau^2, divided by C and by the number of images with at least one
    cell (B without a mask): the authors' normalisation (their code: ``/ (N C)``). Paper weights:
    tau 4 and 3 for segmentation; the authors' detection code: tau 1, weight 5 per FPN level.
    """
    check_maps("cwd", student, teacher)
    b, c = student.shape[:2]
    weight = cells_of(student, mask).expand(b, c, *student.shape[-2:]).flatten(2)  # [B, C, HW]
    _, log_ps = masked_softmax(student.flatten(2) / tau, weight, dim=2)
    pt, log_pt = masked_softmax(teacher.detach().flatten(2) / tau, weight, dim=2)
    kl = (pt * (log_pt - log_ps)).sum()
    images = (weight[:, 0].sum(dim=1) > 0).sum().clamp_min(1)
    return kl * tau * tau / (c * images)


# --- FGD ---------------------------------------------------------------------------------------


def box_weights(boxes: list[Tensor], stride: int, shape: tuple[int, int]) -> Tensor:
    """FGD eq. 1-3, foreground part: ``[B, 1, H, W]``, ``1 / (H_r W_r)`` on the cells of box r.

    Args:
        boxes: per image ``[G_i, 4]`` xyxy in the input pixels of the map's model.
        stride: the level's stride in those pixels; shape: the map's ``(H, W)``.
    A box covers the cells it overlaps, rows ``floor(y1 / s) .. ceil(y2 / s) - 1`` (columns
    alike), ``H_r x W_r`` of them; where boxes overlap the larger value (the smaller box) wins,
    as in the authors' code. Zero off the boxes (the background).
    """
    out = torch.zeros(len(boxes), 1, *shape)
    for i, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in image_boxes.detach().cpu().double().tolist():
            r0, c0 = max(math.floor(y1 / stride), 0), max(math.floor(x1 / stride), 0)
            r1, c1 = min(max(math.ceil(y2 / stride), r0 + 1), shape[0]), min(max(math.ceil(x2 / stride), c0 + 1), shape[1])
            if r1 > r0 and c1 > c0:
                cells = out[i, 0, r0:r1, c0:c1]
                cells.clamp_(min=1.0 / ((r1 - r0) * (c1 - c0)))
    return out


def fgd_attention(feat: Tensor, weight: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """FGD eq. 4-6: spatial ``[B, 1, H, W]`` and channel ``[B, C]`` attention of a map.

    Spatial: ``n softmax_{i,j}(mean_c |F| / T)`` over the n valid cells of each image (``weight``
    ``[B, 1, H, W]`` > 0; the paper's H W on an un-padded map), zero elsewhere. Channel:
    ``C softmax_c(mean_{i,j} |F_c| / T)``, the mean over the valid cells.
    """
    b, c, h, w = feat.shape
    value = feat.abs()
    count = weight.flatten(1).sum(dim=1).clamp_min(1.0)  # [B]
    spatial, _ = masked_softmax(value.mean(dim=1).flatten(1) / temperature, weight.flatten(1), dim=1)
    channel_mean = (value * weight).flatten(2).sum(dim=2) / count[:, None]
    channel = c * F.softmax(channel_mean / temperature, dim=1)
    return (count[:, None] * spatial).view(b, 1, h, w), channel


class GcBlock(nn.Module):
    """FGD's global relation module (eq. 9), GCNet's block (Cao et al. 2019):
    ``R(F) = F + W_v2(ReLU(LN(W_v1(sum_j softmax_j(W_k F_j) F_j))))``.

    ``W_k``: 1x1 conv C -> 1 (Kaiming normal, fan in); ``W_v1``: 1x1 conv C -> C/2, LayerNorm,
    ReLU, ``W_v2``: 1x1 conv C/2 -> C initialised to zero (so R starts as the identity), as the
    authors' code. The context softmax runs over the valid cells only.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.context = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(nn.Conv2d(channels, hidden, kernel_size=1), nn.LayerNorm([hidden, 1, 1]),
                                       nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, kernel_size=1))
        nn.init.kaiming_normal_(self.context.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.context.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, feat: Tensor, valid: Tensor | None = None) -> Tensor:
        """``feat`` ``[B, C, H, W]`` -> ``R(feat)`` of the same shape; ``valid`` ``[B, 1, H, W]``."""
        weight = cells_of(feat, valid).flatten(2)  # [B, 1, HW]
        attention, _ = masked_softmax(self.context(feat).flatten(2), weight, dim=2)
        context = (feat.flatten(2) * attention).sum(dim=2)[..., None, None]  # [B, C, 1, 1]
        return feat + self.transform(context)


class RelationBlocks(nn.Module):
    """FGD's two GcBlocks of one level: ``student`` on the student's map, ``teacher`` on the
    teacher's (both learned; the teacher's map itself gets no gradient)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.student = GcBlock(channels)
        self.teacher = GcBlock(channels)


def fgd_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, foreground: Tensor | None = None,
             relation: RelationBlocks | None = None, temperature: float = 0.5, alpha: float = 5e-5,
             beta: float = 2.5e-5, gamma: float = 5e-5, lam: float = 5e-7) -> Tensor:
    """FGD (Yang et al. 2022, eq. 7, 8, 10): ``alpha L_fg + beta L_bg + gamma L_at + lambda L_global``.

    Args:
        student: ``[B, C, H, W]`` the adapted student map; teacher: ``[B, C, H, W]`` the aligned map.
        mask: ``[B, 1, H, W]`` bool, the valid cells (None: all).
        foreground: ``[B, 1, H, W]`` the box scale mask of :func:`box_weights` (None: no box).
        relation: the level's :class:`RelationBlocks` (None: no global term).
        temperature, alpha, beta, gamma, lam: T and the weights; the paper's for Faster R-CNN
            (its code's FPN levels summed) are the defaults.
    With ``M`` the foreground (box) cells, ``S = foreground`` there and ``1 / N_bg`` on the other
    valid cells (N_bg of them, per image), ``A^S``, ``A^C`` the teacher's attention
    (:func:`fgd_attention`) and D = (T - S)^2:
    ``L_fg = sum M S A^S A^C D / B``, ``L_bg = sum (1 - M) S A^S A^C D / B`` (eq. 7);
    ``L_at = (sum |A^C_t - A^C_s| + sum |A^S_t - A^S_s|) / B`` (eq. 8, L1, the student's attention
    from its adapted map); ``L_global = sum (R_t(T) - R_s(S))^2 / B`` (eq. 10) over the valid
    cells. All sums run over the batch, channels and cells (no mean): the paper's weights assume it.
    """
    check_maps("fgd", student, teacher)
    teacher = teacher.detach().clone()  # a tensor the GcBlock may save (not an inference tensor)
    valid = cells_of(student, mask)
    fg = torch.zeros_like(valid) if foreground is None else foreground.to(valid) * valid
    bg = valid * (fg <= 0)
    bg = bg / bg.flatten(1).sum(dim=1).clamp_min(1.0)[:, None, None, None]
    spatial_t, channel_t = fgd_attention(teacher, valid, temperature)
    spatial_s, channel_s = fgd_attention(student, valid, temperature)
    batch = student.shape[0]
    focal = (teacher - student).pow(2) * spatial_t * channel_t[..., None, None]
    loss = alpha * (focal * fg).sum() / batch + beta * (focal * bg).sum() / batch
    attention = (channel_t - channel_s).abs().sum() + (spatial_t - spatial_s).abs().sum()
    loss = loss + gamma * attention / batch
    if relation is not None:
        diff = relation.teacher(teacher, valid) - relation.student(student, valid)
        loss = loss + lam * (diff.pow(2) * valid).sum() / batch
    return loss


# --- MGD ---------------------------------------------------------------------------------------


def generation_block(channels: int) -> nn.Sequential:
    """MGD's generation block G (eq. 2): 3x3 conv, ReLU, 3x3 conv, at the teacher's channels."""
    return nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, kernel_size=3, padding=1))


def random_drop(shape: tuple[int, ...], ratio: float, device: torch.device,
                generator: torch.Generator | None = None) -> Tensor:
    """``[B, 1, H, W]`` bool, true on the cells MGD masks: each with probability ``ratio``
    (``rand > 1 - ratio``, as the authors' code). From ``generator``, else torch's global RNG
    (seeded by the run's seed and saved in its checkpoints, so a resumed run draws the same)."""
    b, _, h, w = shape
    return torch.rand(b, 1, h, w, device=device, generator=generator) > 1.0 - ratio


def mgd_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, generation: nn.Module | None = None,
             valid: Tensor | None = None, ratio: float = 0.45, alpha: float = 5e-7, drop: Tensor | None = None) -> Tensor:
    """MGD (Yang et al. 2022, eq. 1-3): ``alpha sum (G(S * M) - T)^2 / B``.

    Args:
        student: ``[B, C, H, W]`` the adapted student map; teacher: ``[B, C, H, W]`` the aligned map.
        mask: ``[B, 1, H, W]`` bool, the cells the error is summed over (None: all).
        generation: G (:func:`generation_block`, learned); None: the identity (for tests only).
        valid: ``[B, 1, H, W]`` bool, the un-padded cells: the student's map is zeroed outside
            them before G, as the aligned teacher is (default ``mask``).
        ratio: lambda, the share of cells masked; alpha: the weight (defaults: the authors'
            Faster R-CNN setting; 2e-5 and 0.65 for one-stage detectors).
        drop: ``[B, 1, H, W]`` bool, the masked cells; None: drawn by :func:`random_drop`.
    ``M`` is 0 on the dropped cells, 1 elsewhere; the squared error is summed over the cells of
    ``mask`` and the channels, divided by the batch size (the paper's reduction).
    """
    check_maps("mgd", student, teacher)
    if drop is None:
        drop = random_drop(tuple(student.shape), ratio, student.device)
    region = cells_of(student, mask)
    inside = region if valid is None else valid.to(student.dtype)
    masked = student * (~drop).to(student.dtype) * inside
    generated = masked if generation is None else generation(masked)
    return alpha * ((generated - teacher.detach()).pow(2) * region).sum() / student.shape[0]


for _loss in (
    DistillLoss("cwd", "feature", cwd_loss),
    DistillLoss("fgd", "feature_boxes", fgd_loss),
    DistillLoss("mgd", "feature_generative", mgd_loss),
):
    DISTILL_LOSSES.register(_loss.name)(_loss)
