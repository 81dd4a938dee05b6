"""Level pairing across resolutions, grid alignment and box mapping (docs/METHOD.md section 6)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detkd.config import ModelSection, RPNSection, load_config
from detkd.distill.pairing import (
    align_teacher_map,
    feature_layout,
    feature_strides,
    map_boxes_to_teacher,
    pair_levels,
    rpn_pairs,
    scale_factors,
    student_scale,
)
from detkd.errors import DetkdError
from detkd.models import build_model

REPO = Path(__file__).resolve().parents[2]
FIVE = {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}
IMAGES = [(300, 420), (288, 384)]


@pytest.fixture(scope="module")
def small_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSection(preset="small", min_size=320, max_size=640), 4).eval()


def test_half_resolution_shifts_by_one_level() -> None:
    pairing = pair_levels(FIVE, FIVE, scale=0.5)
    assert pairing.mode == "shift" and pairing.shift == 1
    assert pairing.pairs == (("0", "1"), ("1", "2"), ("2", "3"), ("3", "pool"))
    assert pairing.index_pairs() == ((0, 1), (1, 2), (2, 3), (3, 4))
    assert "k=1" in pairing.describe() and "without a partner: pool" in pairing.describe()


def test_same_resolution_is_the_identity_and_quarter_shifts_by_two() -> None:
    assert pair_levels(FIVE, FIVE, scale=1.0).pairs == tuple((n, n) for n in FIVE)
    assert pair_levels(FIVE, FIVE, scale=0.25).pairs == (("0", "2"), ("1", "3"), ("2", "pool"))


def test_three_level_mobilenet_student_pairs_by_stride(small_teacher: torch.nn.Module) -> None:
    config = load_config(REPO / "configs" / "voc" / "student_mnv3.yaml", ["model.weights_backbone=null"])
    student = build_model(config.model, 4)
    mnv3, resnet = feature_strides(student), feature_strides(small_teacher)
    assert mnv3 == {"0": 32, "1": 32, "pool": 64}  # torchvision's 3-level MobileNetV3-Large FPN
    assert feature_layout(student.backbone)[1] == {"0": 256, "1": 256, "pool": 256}
    assert student.training  # the probe restores the training flag
    assert resnet == FIVE  # ResNet with returned_layers [1, 2, 3, 4]
    assert feature_strides(build_model(ModelSection(preset="tiny"), 4)) == FIVE  # MobileNetV3, 5 levels
    assert pair_levels(mnv3, resnet, scale=1.0).pairs == (("0", "3"), ("1", "3"), ("pool", "pool"))
    assert pair_levels(mnv3, resnet, scale=0.5).pairs == (("0", "pool"), ("1", "pool"))
    # all 15 anchors at every level (torchvision's MobileNetV3 layout): no RPN map compares with ResNet's
    assert rpn_pairs(pair_levels(mnv3, resnet, 1.0), student.rpn.anchor_generator, small_teacher.rpn.anchor_generator) == ()


def test_rpn_maps_pair_where_anchors_agree_in_teacher_pixels(small_teacher: torch.nn.Module) -> None:
    anchors_t = small_teacher.rpn.anchor_generator  # sizes 8, 16, 32, 64, 128 at strides 4..64
    student = build_model(ModelSection(preset="tiny", min_size=160), 4)
    half = pair_levels(FIVE, FIVE, 0.5)
    assert rpn_pairs(half, student.rpn.anchor_generator, anchors_t) == half.pairs  # 8 px at 1/2 = 16 px
    same = pair_levels(FIVE, FIVE, 1.0)
    assert rpn_pairs(same, student.rpn.anchor_generator, anchors_t) == same.pairs
    other = build_model(ModelSection(preset="tiny", rpn=RPNSection(aspect_ratios=[1.0])), 4)  # 1 anchor a cell
    assert rpn_pairs(same, other.rpn.anchor_generator, anchors_t) == ()


def test_other_scales_resample_to_the_nearest_stride() -> None:
    pairing = pair_levels(FIVE, FIVE, scale=0.6)
    assert pairing.mode == "resample" and "bilinear" in pairing.describe()
    # student stride 4 at scale 0.6 covers 6.7 teacher pixels: nearest teacher stride 8
    assert dict(pairing.pairs)["0"] == "1" and dict(pairing.pairs)["3"] == "pool"


def test_no_partner_is_an_error_naming_both_level_sets() -> None:
    with pytest.raises(DetkdError, match=r"student strides \{'p6': 128\} at scale 1\b.*teacher strides \{'0': 4, '1': 8\}"):
        pair_levels({"p6": 128}, {"0": 4, "1": 8}, scale=1.0)
    with pytest.raises(DetkdError, match=r"student strides \{'0': 4\} at scale 0\.125"):
        pair_levels({"0": 4}, {"0": 4, "1": 8}, scale=0.125)  # needs a teacher stride of 32


def test_boxes_map_by_each_images_own_factors() -> None:
    scales = scale_factors([(100, 150), (120, 80)], [(200, 450), (300, 200)])  # per image (sy, sx)
    assert scales.tolist() == [[2.0, 3.0], [2.5, 2.5]]
    assert student_scale(scales) == pytest.approx(1 / math.sqrt(math.sqrt(6) * 2.5))
    boxes = map_boxes_to_teacher([torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[2.0, 2.0, 4.0, 8.0]])], scales)
    assert boxes[0].tolist() == [[3.0, 4.0, 9.0, 8.0]] and boxes[1].tolist() == [[5.0, 5.0, 10.0, 20.0]]


@pytest.mark.parametrize("mode", ["resample", "shift"])
def test_resampling_puts_each_teacher_value_at_the_student_cell_over_the_same_pixels(mode: str) -> None:
    # teacher map = the teacher-pixel centre (x, y) of each cell: linear, so bilinear sampling is exact
    stride_t, stride_s, grid_t = 16, 8, (10, 20)
    ys, xs = torch.meshgrid(torch.arange(grid_t[0]), torch.arange(grid_t[1]), indexing="ij")
    teacher = (torch.stack([xs, ys]).float()[None] + 0.5) * stride_t
    # scales 0.6 and 0.75 (not 1/2^k): a "shift" pairing given such a batch must resample it too
    aligned, valid = align_teacher_map(teacher, (12, 30), [(96, 240)], [(160, 320)], stride_s, stride_t, mode)
    assert aligned.shape == (1, 2, 12, 30) and bool(valid.all())
    for axis, (cells, ratio) in enumerate([(30, 320 / 240), (12, 160 / 96)]):
        centres = (torch.arange(cells) + 0.5) * stride_s * ratio  # student cell centres in teacher pixels
        inside = (centres >= stride_t / 2) & (centres <= (grid_t[1 - axis] - 0.5) * stride_t)  # else clamped
        got = aligned[0, 0, 0, :] if axis == 0 else aligned[0, 1, :, 0]
        assert inside.sum() >= cells - 2 and torch.allclose(got[inside], centres[inside].float(), atol=1e-3)


def test_resampled_maps_take_the_student_grid_and_mask_the_padding() -> None:
    teacher = torch.ones(2, 3, 10, 12)
    aligned, valid = align_teacher_map(teacher, (7, 8), [(50, 60), (40, 30)], [(80, 96), (64, 48)], 8, 8, "resample")
    assert aligned.shape == (2, 3, 7, 8) and valid.shape == (2, 1, 7, 8)
    assert valid[0].sum() == 7 * 8 and valid[1].sum() == 5 * 4  # ceil(40/8) x ceil(30/8)
    assert torch.equal(aligned[:, :1] > 0, valid)  # the constant map lands exactly on the valid cells


def backbone_run(model: torch.nn.Module, images: list[torch.Tensor]) -> tuple[list[tuple[int, int]], dict]:
    with torch.no_grad():
        image_list, _ = model.transform(images)
        return image_list.image_sizes, model.backbone(image_list.tensors)


@pytest.mark.parametrize(("student_preset", "min_size", "mode"),
                         [("small", 160, "shift"), ("tiny", 160, "shift"), ("tiny", 192, "resample")])
def test_paired_levels_meet_on_the_students_grid(small_teacher: torch.nn.Module, student_preset: str,
                                                 min_size: int, mode: str) -> None:
    torch.manual_seed(0)
    student = build_model(ModelSection(preset=student_preset, min_size=min_size, max_size=2 * min_size), 4).eval()
    images = [torch.rand(3, h, w) for h, w in IMAGES]
    t_sizes, t_feats = backbone_run(small_teacher, images)
    s_sizes, s_feats = backbone_run(student, images)
    scale = student_scale(scale_factors(s_sizes, t_sizes))
    pairing = pair_levels(feature_strides(student), feature_strides(small_teacher), scale)
    assert pairing.mode == mode and len(pairing.pairs) == 4  # at 0.6 the student pool level (107 teacher px) has no partner
    for s_name, t_name in pairing.pairs:
        s_map, t_map = s_feats[s_name], t_feats[t_name]
        stride_s, stride_t = pairing.strides(s_name, t_name)
        if mode == "shift":  # the same grid, up to torchvision's padding to a multiple of 32
            assert abs(s_map.shape[-2] - t_map.shape[-2]) <= 1 and abs(s_map.shape[-1] - t_map.shape[-1]) <= 1
        aligned, valid = align_teacher_map(t_map, s_map.shape[-2:], s_sizes, t_sizes, stride_s, stride_t, pairing.mode)
        assert aligned.shape == (len(images), t_map.shape[1], *s_map.shape[-2:])
        for i, (h, w) in enumerate(s_sizes):
            rows, cols = min(math.ceil(h / stride_s), s_map.shape[-2]), min(math.ceil(w / stride_s), s_map.shape[-1])
            assert valid[i, 0].sum() == rows * cols and valid[i, 0, :rows, :cols].all()
            if mode == "shift":
                assert torch.equal(aligned[i, :, :rows, :cols], t_map[i, :, :rows, :cols])
            assert not aligned[i][:, ~valid[i, 0]].any()
