"""The frozen teacher: driven through its submodules, scoring the student's proposals, untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from detkd.config import ModelSection
from detkd.distill.losses import hint_loss, weighted_soft_ce
from detkd.distill.pairing import map_boxes_to_teacher, scale_factors
from detkd.distill.teacher import check_teacher_compatible, freeze_teacher, run_teacher, teacher_roi_outputs
from detkd.errors import DetkdError
from detkd.models import build_model

CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return freeze_teacher(build_model(ModelSection(preset="small", min_size=320, max_size=640), len(CLASSES) + 1))


def boxes_in_frame(boxes: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
    sy, sx = resized[0] / original[0], resized[1] / original[1]
    return boxes * torch.tensor([sx, sy, sx, sy])


def test_teacher_scores_mapped_student_proposals_as_its_own_boxes(teacher: torch.nn.Module) -> None:
    student = build_model(ModelSection(preset="tiny", min_size=224, max_size=448), len(CLASSES) + 1).eval()
    images = [torch.rand(3, 300, 420), torch.rand(3, 240, 360)]
    original = [(300, 420), (240, 360)]
    boxes = [torch.tensor([[10.0, 20.0, 200.0, 150.0], [50.0, 60.0, 90.0, 280.0]]),
             torch.tensor([[0.0, 0.0, 359.0, 239.0], [100.0, 30.0, 140.0, 90.0]])]
    outputs = run_teacher(teacher, images)
    with torch.no_grad():
        student_sizes = student.transform(images)[0].image_sizes
    in_student = [boxes_in_frame(b, o, s) for b, o, s in zip(boxes, original, student_sizes)]
    mapped = map_boxes_to_teacher(in_student, scale_factors(student_sizes, outputs.image_sizes))
    direct = [boxes_in_frame(b, o, t) for b, o, t in zip(boxes, original, outputs.image_sizes)]
    logits_mapped, deltas_mapped = teacher_roi_outputs(teacher, outputs, [m.float() for m in mapped])
    logits_direct, deltas_direct = teacher_roi_outputs(teacher, outputs, direct)
    assert logits_mapped.shape == (4, len(CLASSES) + 1) and deltas_mapped.shape == (4, 4 * (len(CLASSES) + 1))
    assert torch.allclose(logits_mapped, logits_direct, atol=1e-5)
    assert torch.allclose(deltas_mapped, deltas_direct, atol=1e-5)
    # and the mapping matters: unmapped student-frame boxes score differently
    logits_unmapped, _ = teacher_roi_outputs(teacher, outputs, in_student)
    assert not torch.allclose(logits_unmapped, logits_direct, atol=1e-3)


def test_teacher_is_driven_by_submodules_and_stays_untouched(teacher: torch.nn.Module, monkeypatch) -> None:
    before = copy.deepcopy(teacher.state_dict())
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: pytest.fail("teacher(images) was called"))
    outputs = run_teacher(teacher, [torch.rand(3, 200, 260)])
    assert list(outputs.features) == ["0", "1", "2", "3", "pool"]
    assert len(outputs.objectness) == len(outputs.rpn_deltas) == 5
    assert outputs.rpn_deltas[0].shape[1] == 4 * outputs.objectness[0].shape[1]
    student_feat = torch.randn_like(outputs.features["1"], requires_grad=True)
    logits, _ = teacher_roi_outputs(teacher, outputs, [torch.tensor([[0.0, 0.0, 50.0, 50.0]])])
    student_logits = torch.randn_like(logits, requires_grad=True)
    loss = hint_loss(student_feat, outputs.features["1"]) + weighted_soft_ce(student_logits, logits)
    loss.backward()
    assert student_feat.grad is not None and student_logits.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
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
    with pytest.raises(DetkdError, match=r"t\.pt: .*another architecture.*backbone: checkpoint 'resnet18', teacher config 'mobilenet_v3_large'"):
        check_teacher_compatible("t.pt", CLASSES, CLASSES, small, tiny)
