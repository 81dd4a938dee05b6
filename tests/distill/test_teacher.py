"""The frozen teacher: driven through its submodules, scoring the student's proposals, untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from detkd.config import ModelSection
from detkd.distill.pairing import map_boxes_to_teacher, scale_factors
from detkd.distill.teacher import check_teacher_compatible, freeze_teacher, run_teacher, teacher_roi_outputs
from detkd.errors import DetkdError
from detkd.models import build_model

CLASSES = ("a", "b", "c")
# boxes in the original image frame, per image (xyxy)
BOXES = [torch.tensor([[10.0, 20.0, 200.0, 150.0], [50.0, 60.0, 90.0, 280.0], [300.0, 5.0, 419.0, 299.0]]),
         torch.tensor([[0.0, 0.0, 359.0, 239.0], [100.0, 30.0, 140.0, 90.0]])]


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return freeze_teacher(build_model(ModelSection(preset="small", min_size=320, max_size=640), len(CLASSES) + 1))


def resized_boxes(model: torch.nn.Module, images: list[torch.Tensor]) -> tuple[list[tuple[int, int]], list[torch.Tensor]]:
    """The model's ``image_sizes`` and ``BOXES`` as torchvision's own transform resizes them."""
    targets = [{"boxes": b.clone(), "labels": torch.ones(len(b), dtype=torch.int64)} for b in BOXES]
    with torch.no_grad():
        image_list, resized = model.transform(images, targets)
    return image_list.image_sizes, [t["boxes"] for t in resized]


@pytest.mark.parametrize("student_min_size", [160, 192])  # half resolution, and 0.6
def test_teacher_scores_mapped_student_proposals_as_its_own_boxes(teacher: torch.nn.Module, student_min_size: int) -> None:
    torch.manual_seed(1)
    student = build_model(ModelSection(preset="tiny", min_size=student_min_size, max_size=2 * student_min_size),
                          len(CLASSES) + 1).eval()
    images = [torch.rand(3, 300, 420), torch.rand(3, 240, 360)]
    outputs = run_teacher(teacher, images)
    student_sizes, in_student = resized_boxes(student, images)  # the student's frame
    teacher_sizes, in_teacher = resized_boxes(teacher, images)  # the teacher's own frame
    assert outputs.image_sizes == teacher_sizes and student_sizes[0][0] == student_min_size
    mapped = map_boxes_to_teacher(in_student, scale_factors(student_sizes, outputs.image_sizes))
    for m, t in zip(mapped, in_teacher):
        assert torch.allclose(m, t, atol=1e-3)
    logits_mapped, deltas_mapped = teacher_roi_outputs(teacher, outputs, mapped)
    logits_direct, deltas_direct = teacher_roi_outputs(teacher, outputs, in_teacher)
    assert logits_mapped.shape == (5, len(CLASSES) + 1) and deltas_mapped.shape == (5, 4 * (len(CLASSES) + 1))
    assert torch.allclose(logits_mapped, logits_direct, atol=1e-4)
    assert torch.allclose(deltas_mapped, deltas_direct, atol=1e-4)
    # and the mapping matters: unmapped student-frame boxes score differently
    logits_unmapped, _ = teacher_roi_outputs(teacher, outputs, in_student)
    assert not torch.allclose(logits_unmapped, logits_direct, atol=1e-3)


def test_teacher_is_driven_by_submodules_and_stays_untouched(teacher: torch.nn.Module, monkeypatch) -> None:
    before = copy.deepcopy(teacher.state_dict())
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: pytest.fail("teacher(images) was called"))
    outputs = run_teacher(teacher, [torch.rand(3, 200, 260)])
    assert outputs.image_sizes == [(320, 416)]  # the teacher's own min_size
    assert list(outputs.features) == ["0", "1", "2", "3", "pool"]
    assert len(outputs.objectness) == len(outputs.rpn_deltas) == 5
    for level, obj, deltas in zip(outputs.features.values(), outputs.objectness, outputs.rpn_deltas):
        assert obj.shape[-2:] == deltas.shape[-2:] == level.shape[-2:] and deltas.shape[1] == 4 * obj.shape[1]
    boxes = [torch.tensor([[0.0, 0.0, 50.0, 50.0], [20.0, 30.0, 200.0, 300.0]])]
    logits, box_deltas = teacher_roi_outputs(teacher, outputs, boxes)
    # a loss of the kinds distillation builds, teacher tensors as constants (the products save them)
    student_feat = torch.randn_like(outputs.features["1"], requires_grad=True)
    student_logits = torch.randn_like(logits, requires_grad=True)
    student_obj = torch.randn_like(outputs.objectness[0], requires_grad=True)
    soft_ce = -(F.softmax(logits, dim=1) * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
    loss = F.mse_loss(student_feat, outputs.features["1"]) + soft_ce
    loss = loss + F.binary_cross_entropy_with_logits(student_obj, torch.sigmoid(outputs.objectness[0]))
    loss = loss + (student_logits.repeat(1, 4) * box_deltas).pow(2).mean()
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (student_feat, student_logits, student_obj))
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_training_mode_teacher_is_refused(teacher: torch.nn.Module) -> None:
    teacher.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            run_teacher(teacher, [torch.rand(3, 64, 64)])
    finally:
        teacher.eval()


def test_incompatible_teacher_checkpoints_name_both_sides() -> None:
    small, tiny = ModelSection(preset="small"), ModelSection(preset="tiny")
    check_teacher_compatible("t.pt", CLASSES, CLASSES, small, ModelSection(preset="small", min_size=640))
    with pytest.raises(DetkdError, match=r"t\.pt: .*classes \['a', 'b'\] \(2\).*\['a', 'b', 'c'\] \(3\)"):
        check_teacher_compatible("t.pt", ("a", "b"), CLASSES, small, small)
    with pytest.raises(DetkdError, match=r"t\.pt: .*classes \['a', 'c', 'b'\] \(3\).*\['a', 'b', 'c'\] \(3\)"):
        check_teacher_compatible("t.pt", ("a", "c", "b"), CLASSES, small, small)  # same number, other order
    other = r"t\.pt: .*another architecture.*backbone: checkpoint 'resnet18', teacher config 'mobilenet_v3_large'"
    with pytest.raises(DetkdError, match=other):
        check_teacher_compatible("t.pt", CLASSES, CLASSES, small, tiny)
    with pytest.raises(DetkdError, match=r"fpn_channels: checkpoint 128, teacher config 192"):
        check_teacher_compatible("t.pt", CLASSES, CLASSES, small, ModelSection(preset="small", fpn_channels=192))
