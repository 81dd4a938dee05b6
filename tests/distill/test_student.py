"""The opened-up student forward gives torchvision's own losses, and consistent samples."""

from __future__ import annotations

import pytest
import torch

from detkd.config import ModelSection
from detkd.distill.student import student_forward
from detkd.models import build_model


def batch(with_empty: bool = False) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 160, generator=g), torch.rand(3, 144, 128, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 150.0, 100.0]]), "labels": torch.tensor([1, 3]),
         "image_id": "a", "difficult": torch.tensor([False, True]), "ignore_boxes": torch.zeros(0, 4)},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([2]),
         "image_id": "b", "difficult": torch.tensor([False]), "ignore_boxes": torch.zeros(0, 4)},
    ]
    if with_empty:
        targets[1]["boxes"], targets[1]["labels"] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    return images, targets


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSection(preset="tiny", min_size=128, max_size=192), 4).train()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_empty", [False, True])
def test_losses_equal_torchvisions_forward(model: torch.nn.Module, seed: int, with_empty: bool) -> None:
    images, targets = batch(with_empty)
    torch.manual_seed(seed)
    expected = model(images, targets)
    torch.manual_seed(seed)
    out = student_forward(model, images, targets)
    assert set(out.losses) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(out.losses[name], value, rtol=1e-6, atol=1e-7), name


def test_sampled_anchors_sit_where_they_say(model: torch.nn.Module) -> None:
    images, targets = batch()
    torch.manual_seed(0)
    out = student_forward(model, images, targets)
    rpn = out.rpn
    assert rpn.num_positive > 0 and rpn.labels[: rpn.num_positive].eq(1).all() and rpn.labels[rpn.num_positive :].eq(0).all()
    for s in range(len(rpn.labels)):
        level, i, a, y, x = (int(t[s]) for t in (rpn.level, rpn.image, rpn.anchor, rpn.y, rpn.x))
        assert rpn.logits[s] == out.objectness[level][i, a, y, x]
        assert torch.equal(rpn.deltas[s], out.rpn_deltas[level][i, 4 * a : 4 * a + 4, y, x])
    assert len(out.features) == len(out.objectness) == 5


def test_roi_samples_are_torchvisions(model: torch.nn.Module) -> None:
    images, targets = batch()
    torch.manual_seed(3)
    out = student_forward(model, images, targets)
    roi = out.roi
    n = sum(len(p) for p in roi.proposals)
    assert roi.class_logits.shape == (n, 4) and roi.box_regression.shape == (n, 16)  # K + 1 = 4
    assert roi.labels.shape == (n,) and roi.targets.shape == (n, 4) and (roi.labels > 0).any()
    # the same draw through torchvision's own sampler gives the same labels
    torch.manual_seed(3)
    image_list, t = model.transform(images, [dict(x) for x in targets])
    feats = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, feats, t)
    _, _, labels, _ = model.roi_heads.select_training_samples(proposals, t)
    assert torch.equal(torch.cat(labels), roi.labels)


def test_gradients_reach_the_student_from_every_exposed_tensor(model: torch.nn.Module) -> None:
    images, targets = batch()
    torch.manual_seed(0)
    out = student_forward(model, images, targets)
    model.zero_grad()
    total = out.rpn.logits.sum() + out.rpn.deltas.sum() + out.roi.class_logits.sum() + out.roi.box_regression.sum()
    total = total + sum(f.mean() for f in out.features.values())
    total.backward()
    assert model.rpn.head.cls_logits.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert next(model.backbone.parameters()).grad is not None
