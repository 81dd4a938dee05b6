"""CWD, FGD, MGD and DKD against independent computations (numpy, explicit loops) on small
tensors, and their gradients: into the student and its learned blocks, never into the teacher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detkd.distill.feature_losses import (
    RelationBlocks,
    box_weights,
    cwd_loss,
    fgd_attention,
    fgd_loss,
    generation_block,
    mgd_loss,
    random_drop,
)
from detkd.distill.losses import dkd_loss


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def valid_mask() -> torch.Tensor:
    """``[2, 1, 4, 5]``: image 0 whole, image 1 without its last row and its last two columns."""
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    mask[1, 0, 3, :] = False
    mask[1, 0, :, 3:] = False
    return mask


def maps(seed: int = 0, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, channels, 4, 5, generator=g, dtype=torch.float64),
            torch.randn(2, channels, 4, 5, generator=g, dtype=torch.float64))


# --- CWD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_is_the_channel_wise_kl_over_the_masked_cells(tau: float) -> None:
    student, teacher = maps()
    mask = valid_mask()
    s, t, m = student.numpy(), teacher.numpy(), mask.numpy()[:, 0]
    total = 0.0
    for b in range(2):
        for c in range(3):
            cells = np.argwhere(m[b])
            ps = np_softmax(np.array([s[b, c, i, j] for i, j in cells]) / tau)
            pt = np_softmax(np.array([t[b, c, i, j] for i, j in cells]) / tau)
            total += sum(pt[k] * math.log(pt[k] / ps[k]) for k in range(len(cells)))
    expected = tau**2 * total / (3 * 2)  # / (C * images)
    assert cwd_loss(student, teacher, mask, tau).item() == pytest.approx(expected, rel=1e-10)
    # no mask: every cell; an image without a cell (all masked) is left out of the count
    alone = cwd_loss(student[:1], teacher[:1], None, tau).item()
    empty = mask.clone()
    empty[1] = False
    assert cwd_loss(student, teacher, empty, tau).item() == pytest.approx(alone, rel=1e-10)


def test_cwd_ignores_each_channels_offset_and_padding() -> None:
    student, teacher = maps()
    mask = valid_mask()
    shift = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    base = cwd_loss(student, teacher, mask).item()
    assert cwd_loss(student + shift, teacher - shift, mask).item() == pytest.approx(base, rel=1e-9)
    padded = student.clone()
    padded[~mask.expand_as(padded)] = 1e4  # huge values outside the valid cells change nothing
    assert cwd_loss(padded, teacher, mask).item() == pytest.approx(base, rel=1e-9)
    assert cwd_loss(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-12)


# --- FGD ---------------------------------------------------------------------------------------


def test_box_weights_cover_the_overlapped_cells_and_the_smaller_box_wins() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 8.0], [6.0, 2.0, 9.0, 5.0]]), torch.zeros(0, 4)]
    got = box_weights(boxes, 4, (4, 5))
    expected = np.zeros((2, 1, 4, 5))
    expected[0, 0, 0:2, 0:4] = 1 / 8  # rows 0-1, cols 0-3: 8 cells
    expected[0, 0, 0:2, 1:3] = 1 / 4  # rows 0-1 (y 2-5), cols 1-2 (x 6-9): the smaller box, 4 cells
    assert np.allclose(got.numpy(), expected)
    # the same boxes on a half-resolution student (boxes and stride halve together): same cells
    half = box_weights([b / 2 for b in boxes], 2, (4, 5))
    assert torch.equal(half, got)
    # a box beyond the grid is clipped; a box thinner than a cell still marks its cell
    clipped = box_weights([torch.tensor([[15.0, 13.0, 40.0, 30.0], [1.0, 1.0, 1.5, 1.5]])], 4, (4, 5))
    assert clipped[0, 0, 3, 3:].tolist() == [0.5, 0.5] and clipped[0, 0, 0, 0].item() == 1.0


def np_attention(f: np.ndarray, valid: np.ndarray, temp: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial ``[H, W]`` and channel ``[C]`` attention of one image's map ``[C, H, W]``."""
    cells = np.argwhere(valid)
    n, c = len(cells), f.shape[0]
    spatial_values = np.array([np.abs(f[:, i, j]).mean() for i, j in cells])
    spatial = np.zeros(valid.shape)
    for (i, j), a in zip(cells, n * np_softmax(spatial_values / temp)):
        spatial[i, j] = a
    channel_values = np.array([np.mean([abs(f[k, i, j]) for i, j in cells]) for k in range(c)])
    return spatial, c * np_softmax(channel_values / temp)


def np_gcblock(block, f: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """GcBlock by hand: softmax context over the valid cells, 1x1 conv, LayerNorm, ReLU, 1x1 conv."""
    wk, bk = block.context.weight.detach().numpy()[0, :, 0, 0], block.context.bias.item()
    cells = np.argwhere(valid)
    weights = np_softmax(np.array([wk @ f[:, i, j] + bk for i, j in cells]))
    context = sum(w * f[:, i, j] for w, (i, j) in zip(weights, cells))
    conv1, norm, _, conv2 = block.transform
    hidden = conv1.weight.detach().numpy()[:, :, 0, 0] @ context + conv1.bias.detach().numpy()
    hidden = (hidden - hidden.mean()) / np.sqrt(hidden.var() + norm.eps)
    hidden = np.maximum(hidden * norm.weight.detach().numpy()[:, 0, 0] + norm.bias.detach().numpy()[:, 0, 0], 0)
    add = conv2.weight.detach().numpy()[:, :, 0, 0] @ hidden + conv2.bias.detach().numpy()
    return f + add[:, None, None]


def fgd_by_hand(s: np.ndarray, t: np.ndarray, valid: np.ndarray, fg: np.ndarray, relation, w: dict) -> float:
    batch, total = s.shape[0], 0.0
    for b in range(batch):
        spatial_t, channel_t = np_attention(t[b], valid[b], w["temperature"])
        spatial_s, channel_s = np_attention(s[b], valid[b], w["temperature"])
        background = [(i, j) for i, j in np.argwhere(valid[b]) if fg[b, i, j] == 0]
        for k, i, j in np.ndindex(*s[b].shape):
            err = spatial_t[i, j] * channel_t[k] * (t[b, k, i, j] - s[b, k, i, j]) ** 2
            if fg[b, i, j] > 0:
                total += w["alpha"] * fg[b, i, j] * err / batch
            elif (i, j) in background:
                total += w["beta"] * err / len(background) / batch
        total += w["gamma"] * (np.abs(channel_t - channel_s).sum() + np.abs(spatial_t - spatial_s).sum()) / batch
        r_s, r_t = np_gcblock(relation.student, s[b], valid[b]), np_gcblock(relation.teacher, t[b], valid[b])
        total += w["lam"] * sum(((r_t - r_s)[:, i, j] ** 2).sum() for i, j in np.argwhere(valid[b])) / batch
    return total


def test_fgd_equals_a_hand_computation() -> None:
    student, teacher = maps(1, channels=4)
    mask = valid_mask()
    fg = box_weights([torch.tensor([[2.0, 3.0, 9.0, 11.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]])], 4, (4, 5))
    torch.manual_seed(0)
    relation = RelationBlocks(4).double()
    for p in relation.parameters():  # the zero-initialised last convs would hide the transform
        torch.nn.init.normal_(p, std=0.5)
    weights = {"temperature": 0.5, "alpha": 2.0, "beta": 3.0, "gamma": 0.7, "lam": 0.1}  # all of a size
    got = fgd_loss(student, teacher, mask, fg, relation, **weights).item()
    expected = fgd_by_hand(student.numpy(), teacher.numpy(), mask.numpy()[:, 0], fg.double().numpy()[:, 0], relation, weights)
    assert got == pytest.approx(expected, rel=1e-9)
    # the paper's defaults: the same terms with its weights
    defaults = {"temperature": 0.5, "alpha": 5e-5, "beta": 2.5e-5, "gamma": 5e-5, "lam": 5e-7}
    by_hand = fgd_by_hand(student.numpy(), teacher.numpy(), mask.numpy()[:, 0], fg.double().numpy()[:, 0], relation, defaults)
    assert fgd_loss(student, teacher, mask, fg, relation).item() == pytest.approx(by_hand, rel=1e-9)


def test_fgd_attention_sums_to_the_cell_and_channel_counts() -> None:
    student, _ = maps()
    mask = valid_mask()
    spatial, channel = fgd_attention(student, mask.double(), 0.5)
    assert spatial.flatten(1).sum(dim=1).tolist() == pytest.approx([20.0, 9.0])  # n valid cells
    assert spatial[~mask].abs().max().item() == 0.0 and channel.sum(dim=1).tolist() == pytest.approx([3.0, 3.0])


def test_fgd_gradients_reach_the_student_and_both_gcblocks_not_the_teacher() -> None:
    student, teacher = maps(2, channels=4)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    relation = RelationBlocks(4).double()
    fg = box_weights([torch.tensor([[2.0, 3.0, 9.0, 11.0]]), torch.zeros(0, 4)], 4, (4, 5))
    fgd_loss(student, teacher, valid_mask(), fg, relation, alpha=1.0, beta=1.0, gamma=1.0, lam=1.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    for block in (relation.student, relation.teacher):  # the last conv starts at zero: it learns first
        assert block.transform[-1].weight.grad.abs().sum() > 0


# --- MGD ---------------------------------------------------------------------------------------


def np_conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 3x3 convolution with zero padding 1, by loops: ``[C, H, W]`` -> ``[O, H, W]``."""
    c, h, w = x.shape
    padded = np.zeros((c, h + 2, w + 2))
    padded[:, 1:-1, 1:-1] = x
    out = np.zeros((weight.shape[0], h, w))
    for o, i, j in np.ndindex(*out.shape):
        out[o, i, j] = (weight[o] * padded[:, i : i + 3, j : j + 3]).sum() + bias[o]
    return out


def test_mgd_equals_a_hand_computation() -> None:
    student, teacher = maps(3, channels=2)
    mask = valid_mask()
    torch.manual_seed(0)
    generation = generation_block(2).double()
    drop = torch.zeros(2, 1, 4, 5, dtype=torch.bool)
    drop[0, 0, 1, 2] = drop[0, 0, 3, 0] = drop[1, 0, 0, 1] = True
    got = mgd_loss(student, teacher, mask, generation, ratio=0.5, alpha=0.3, drop=drop).item()
    (w1, b1), (w2, b2) = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in (generation[0], generation[2])]
    total = 0.0
    for b in range(2):
        keep = mask.numpy()[b, 0] & ~drop.numpy()[b, 0]  # dropped and padded cells are zero
        generated = np_conv3x3(np.maximum(np_conv3x3(student.numpy()[b] * keep, w1, b1), 0), w2, b2)
        for i, j in np.argwhere(mask.numpy()[b, 0]):
            total += ((generated[:, i, j] - teacher.numpy()[b, :, i, j]) ** 2).sum()
    assert got == pytest.approx(0.3 * total / 2, rel=1e-10)


def test_mgd_masks_follow_the_seed_and_the_ratio() -> None:
    student, teacher = maps(4, channels=2)
    generation = generation_block(2).double()
    values = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        values.append(mgd_loss(student, teacher, None, generation, ratio=0.45).item())
    assert values[0] == values[1] != values[2]
    torch.manual_seed(0)
    drop = random_drop((4, 1, 100, 100), 0.45, torch.device("cpu"))
    assert drop.float().mean().item() == pytest.approx(0.45, abs=0.01)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    mgd_loss(student, teacher, None, generation, ratio=0.45).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0 and generation[0].weight.grad.abs().sum() > 0


# --- DKD ---------------------------------------------------------------------------------------


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(a * math.log(a / b) for a, b in zip(p, q)))


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_equals_a_hand_computation(T: float) -> None:
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(6, 4)) * 2, rng.normal(size=(6, 4)) * 2
    target = np.array([0, 1, 3, 0, 2, 1])
    alpha, beta = 1.5, 0.25
    tckd = nckd = 0.0
    for z_s, z_t, y in zip(zs, zt, target):
        ps, pt = np_softmax(z_s / T), np_softmax(z_t / T)
        tckd += np_kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        nckd += np_kl(np_softmax(np.delete(z_t, y) / T), np_softmax(np.delete(z_s, y) / T))
    expected = T * T * (alpha * tckd + beta * nckd) / 6
    got = dkd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(target), alpha, beta, T)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_dkd_with_the_kd_weights_is_classical_kd() -> None:
    # eq. 5: KD = TCKD + (1 - p_t^teacher) NCKD, sample by sample
    zs, zt, target = torch.tensor([[0.3, 2.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.2, 0.0, -2.0]]), torch.tensor([2])
    pt = zt.softmax(dim=1)
    kd = (pt * (pt.log() - zs.log_softmax(dim=1))).sum().item()
    got = dkd_loss(zs, zt, target, alpha=1.0, beta=1.0 - pt[0, 2].item())
    assert got.item() == pytest.approx(kd, rel=1e-6)


def test_dkd_stays_finite_for_a_confident_teacher_and_learns_the_student_only() -> None:
    student = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], requires_grad=True)
    teacher = torch.tensor([[200.0, 0.0, 0.0], [0.0, 90.0, 0.0]], requires_grad=True)  # p_target = 1 in float32
    loss = dkd_loss(student, teacher, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher.grad is None
    assert dkd_loss(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).item() == 0.0
