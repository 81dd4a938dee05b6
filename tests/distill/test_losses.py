"""The distillation losses against hand-computed values, and every registered loss's contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detkd.distill.feature_losses import RelationBlocks, box_weights
from detkd.distill.losses import (
    DISTILL_LOSSES,
    attention_transfer,
    bounded_l2,
    dist_loss,
    hint_loss,
    hinton_kd,
    objectness_soft_ce,
    pkd_loss,
    standardize,
    teacher_l2,
    weighted_soft_ce,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_background_weight_scales_the_background_term() -> None:
    # student P_s = (1/2, 1/2); teacher P_t = (1/4, 3/4) (logits 0, ln 3)
    # unweighted: -(1/4 ln 1/2 + 3/4 ln 1/2) = ln 2
    # w = (1.5, 1): -(1.5 * 1/4 + 3/4) ln 1/2 = 1.125 ln 2
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[0.0, LN3]])
    assert weighted_soft_ce(student, teacher).item() == pytest.approx(LN2)
    assert weighted_soft_ce(student, teacher, torch.tensor([1.5, 1.0])).item() == pytest.approx(1.125 * LN2)


def test_weighted_soft_ce_is_minimal_at_the_weighted_teacher_not_at_the_teacher() -> None:
    # the docstring's claim: the minimiser is P_s = w * P_t / sum(w * P_t); with w0 = 1.5 it is not P_t
    teacher = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64).log()
    weights = torch.tensor([1.5, 1.0, 1.0], dtype=torch.float64)
    optimum = (weights * teacher.exp()) / (weights * teacher.exp()).sum()
    logits = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([logits], lr=0.5, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = weighted_soft_ce(logits, teacher, weights)
        loss.backward()
        return loss

    optimizer.step(closure)
    found = logits.detach().softmax(dim=1)
    assert torch.allclose(found, optimum, atol=1e-6)  # background 0.3 / 1.1 = 0.273, not 0.2
    assert found[0, 0].item() == pytest.approx(0.3 / 1.1, abs=1e-5)
    at_teacher = teacher.clone().requires_grad_(True)
    weighted_soft_ce(at_teacher, teacher, weights).backward()
    assert at_teacher.grad.abs().max().item() > 1e-2  # P_s = P_t is no stationary point for w0 != 1


def test_temperature_squared_scaling() -> None:
    # T = 2: teacher logits (0, 2 ln 3) give P_t = (1/4, 3/4); student (0, 0) gives (1/2, 1/2);
    # the soft CE is ln 2, times T^2 = 4.
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[0.0, 2 * LN3]])
    assert weighted_soft_ce(student, teacher, T=2.0).item() == pytest.approx(4 * LN2)
    assert hinton_kd(student, teacher, T=2.0).item() == pytest.approx(4 * LN2)


def test_objectness_is_the_two_way_soft_ce() -> None:
    torch.manual_seed(0)
    zs, zt = torch.randn(50) * 3, torch.randn(50) * 3
    as_two_way = weighted_soft_ce(
        torch.stack([torch.zeros(50), zs], 1), torch.stack([torch.zeros(50), zt], 1), torch.tensor([1.5, 1.0]), T=2.0
    )
    assert objectness_soft_ce(zs, zt, bg_weight=1.5, T=2.0).item() == pytest.approx(as_two_way.item(), rel=1e-5)


def test_bounded_l2_switches_per_sample_at_the_margin() -> None:
    target = torch.zeros(4, 4)
    student = torch.tensor([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [0.5, 0, 0, 0], [1.0, 0, 0, 0]], requires_grad=True)
    # squared errors: student 1, 4, 0.25, 1; teacher 1, 1, 1, 0.9999
    teacher = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [1.0, 0, 0, 0], [math.sqrt(0.9999), 0, 0, 0]])
    # m = 0: sample 0 ties (1 + 0 > 1 is false), sample 1 active (4), sample 2 beats the teacher,
    # sample 3 is just worse than its teacher (1 > 0.9999): active (1) -> (4 + 1) / 4
    loss = bounded_l2(student, teacher, target, margin=0.0)
    assert loss.item() == pytest.approx(5 / 4)
    loss.backward()
    # d/dR of ||R - y||^2 / N on the active samples only: 2 (R - y) / 4
    assert student.grad[:, 0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.5])
    # m = 0.1 switches sample 0 on (1 + 0.1 > 1); m = 0.8 also sample 2 (0.25 + 0.8 > 1)
    assert bounded_l2(student, teacher, target, margin=0.1).item() == pytest.approx(6 / 4)
    assert bounded_l2(student, teacher, target, margin=0.8).item() == pytest.approx(6.25 / 4)
    # eq. 1's N: every sampled anchor or proposal, the background ones included
    assert bounded_l2(student, teacher, target, margin=0.8, normalizer=16).item() == pytest.approx(6.25 / 16)


def test_dist_equals_a_direct_pearson_computation() -> None:
    rng = np.random.default_rng(0)
    ys, yt = rng.normal(size=(7, 5)), rng.normal(size=(7, 5)) * 2
    tau, beta, gamma = 2.0, 1.0, 0.5

    def softmax(y: np.ndarray) -> np.ndarray:
        e = np.exp(y / tau - (y / tau).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(ys), softmax(yt)
    inter = np.mean([1 - np.corrcoef(ps[i], pt[i])[0, 1] for i in range(7)])
    intra = np.mean([1 - np.corrcoef(ps[:, j], pt[:, j])[0, 1] for j in range(5)])
    expected = tau**2 * (beta * inter + gamma * intra)
    got = dist_loss(torch.tensor(ys), torch.tensor(yt), tau=tau, beta=beta, gamma=gamma)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hint_with_and_without_mask() -> None:
    student = torch.zeros(1, 2, 2, 2)
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[..., 0, 0] = 3.0  # the differing cell
    teacher[..., 1, 1] = 100.0  # a padded cell, masked out below
    mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    mask[..., 1, 1] = False
    # valid cells: 3 per channel, one of them off by 3 -> L2: 9 / 3, L1: 3 / 3
    assert hint_loss(student, teacher, mask, "l2").item() == pytest.approx(3.0)
    assert hint_loss(student, teacher, mask, "l1").item() == pytest.approx(1.0)
    assert hint_loss(student, teacher, None, "l1").item() == pytest.approx((3 + 100) / 4)
    with pytest.raises(ValueError):
        hint_loss(student, teacher, mask, "l3")


def test_pkd_is_one_minus_the_pearson_correlation_per_channel() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    teacher[:, 1] = 0.7 * student[:, 1] + 0.3 * teacher[:, 1]  # a correlated channel
    flat_s = student.transpose(0, 1).reshape(3, -1).double()
    flat_t = teacher.transpose(0, 1).reshape(3, -1).double()
    pearson = [torch.corrcoef(torch.stack([a, b]))[0, 1].item() for a, b in zip(flat_s, flat_t)]
    expected = sum(1 - r for r in pearson) / 3  # 1/2 mean((s - t)^2) of standardised maps = 1 - r
    assert pkd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-4)
    # blind to each channel's scale and offset, on the student and on the teacher
    scale, shift = torch.tensor([3.0, 0.2, 50.0]).view(1, 3, 1, 1), torch.tensor([1.0, -7.0, 0.0]).view(1, 3, 1, 1)
    assert pkd_loss(student * scale + shift, teacher).item() == pytest.approx(expected, rel=1e-4)
    assert pkd_loss(student, teacher * scale - shift).item() == pytest.approx(expected, rel=1e-4)
    assert pkd_loss(teacher * 5 + 2, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_pkd_statistics_come_from_the_valid_cells_only() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :3, :3] = True
    padded_s, padded_t = student.clone(), teacher.clone()
    padded_s[..., 3, :] = padded_s[..., :, 3] = 1e3  # the padding: large values that must not count
    padded_t[..., 3, :] = -1e3
    expected = pkd_loss(student[..., :3, :3], teacher[..., :3, :3])
    assert pkd_loss(padded_s, padded_t, mask=valid).item() == pytest.approx(expected.item(), rel=1e-5)
    # the error may be taken on fewer cells (near objects) than the statistics (all valid cells)
    region = valid.clone()
    region[..., 0, :] = False
    s_hat, t_hat = standardize(padded_s, valid), standardize(padded_t, valid)
    by_hand = 0.5 * (s_hat - t_hat)[..., 1:3, :3].pow(2).mean()
    assert pkd_loss(padded_s, padded_t, mask=region, valid=valid).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert standardize(padded_s, valid)[..., :3, :3].mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_attention_ignores_channel_count_and_scale() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 5, 5)
    # the same attention map from 8 channels (two copies) at 3x the scale
    student = torch.cat([teacher, teacher], dim=1) * 3.0
    assert attention_transfer(student, teacher).item() == pytest.approx(0.0, abs=1e-10)
    assert attention_transfer(torch.randn(2, 8, 5, 5), teacher).item() > 1e-3


def inputs_of(kind: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Random (student, teacher, extra) of a loss kind; extra keeps the weights uniform."""
    torch.manual_seed(1)
    if kind == "logits":
        return torch.randn(6, 4), torch.randn(6, 4), {}
    if kind == "objectness":
        return torch.randn(6), torch.randn(6), {"bg_weight": 1.0}
    if kind == "regression":
        return torch.randn(6, 4), torch.randn(6, 4), {"target": torch.randn(6, 4)}
    if kind == "labelled_logits":
        return torch.randn(6, 4), torch.randn(6, 4), {"target": torch.tensor([0, 1, 2, 3, 0, 2])}
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    if kind == "feature":
        return torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), {"mask": mask}
    if kind == "feature_boxes":
        boxes = box_weights([torch.tensor([[0.0, 0.0, 8.0, 4.0]]), torch.zeros(0, 4)], 2, (4, 4))
        extra = {"mask": mask, "foreground": boxes, "relation": RelationBlocks(3), "alpha": 1.0, "beta": 1.0,
                 "gamma": 1.0, "lam": 1.0}
        return torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), extra
    if kind == "feature_generative":  # the identity generator, nothing masked: the summed L2 hint
        return torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), {"mask": mask, "generation": torch.nn.Identity(),
                                                                   "ratio": 0.0, "alpha": 1.0}
    raise AssertionError(f"no inputs for kind {kind}")


@pytest.mark.parametrize("name", DISTILL_LOSSES.names())
def test_every_registered_loss(name: str) -> None:
    loss = DISTILL_LOSSES.get(name)
    student, teacher, extra = inputs_of(loss.kind)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    value = loss(student, teacher, **extra)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0, "the student learns"
    assert teacher.grad is None, "nothing flows into the teacher"
    # student equal to teacher: zero, or the minimum (zero gradient) for the cross-entropies
    same = teacher.detach().clone().requires_grad_(True)
    at_teacher = loss(same, teacher.detach(), **extra)
    at_teacher.backward()
    if loss.kind in ("logits", "objectness") and name != "dist":
        assert same.grad.abs().max().item() < 1e-6
    else:
        assert at_teacher.item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_l2_regresses_to_the_teacher_not_the_target() -> None:
    student = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0, 0, 0], [0, 1.0, 0, 0]])
    loss = teacher_l2(student, teacher, teacher + 5.0, normalizer=4)  # the target plays no part
    assert loss.item() == pytest.approx((1 + 1) / 4)  # every sample counts, however good: no bound
    loss.backward()
    assert student.grad.flatten().tolist() == pytest.approx([0.5, 0, 0, 0, 0, 0.5, 0, 0])  # 2 (R_s - R_t) / N
    assert teacher_l2(student, teacher).item() == pytest.approx(2 / 2)  # default N: the P samples


def test_empty_inputs_give_zero() -> None:
    empty = torch.zeros(0, 4, requires_grad=True)
    assert weighted_soft_ce(empty, empty).item() == 0.0
    assert bounded_l2(empty, empty, empty).item() == 0.0
    assert teacher_l2(empty, empty).item() == 0.0
    assert objectness_soft_ce(torch.zeros(0), torch.zeros(0)).item() == 0.0


def test_required_names_are_registered() -> None:
    names = {"soft_ce", "objectness_soft_ce", "bounded_l2", "teacher_l2", "hint_l2", "hint_l1", "attention", "dist", "hinton",
             "pkd", "cwd", "fgd", "mgd", "dkd"}
    assert names <= set(DISTILL_LOSSES.names())


@pytest.mark.parametrize("name", DISTILL_LOSSES.names())
def test_teacher_outputs_from_inference_mode(name: str) -> None:
    # a teacher run under torch.inference_mode gives inference tensors, which autograd may not save
    loss = DISTILL_LOSSES.get(name)
    student, teacher, extra = inputs_of(loss.kind)
    with torch.inference_mode():
        teacher = teacher * 1.0
    student.requires_grad_(True)
    loss(student, teacher, **extra).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_feature_losses_refuse_misaligned_maps() -> None:
    with pytest.raises(ValueError, match="adapt"):
        hint_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="grid"):
        attention_transfer(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="adapt"):
        pkd_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))
    for name in ("cwd", "fgd", "mgd"):
        with pytest.raises(ValueError, match=f"{name}: .*adapt"):
            DISTILL_LOSSES.get(name)(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))
