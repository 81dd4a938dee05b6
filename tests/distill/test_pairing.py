"""Level pairing across resolutions, grid alignment and box mapping (method.md section 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detkd.config import ModelSection, load_config
from detkd.distill.pairing import (
    align_teacher_map,
    feature_strides,
    map_boxes_to_teacher,
    pair_levels,
    scale_factors,
    valid_cells,
)
from detkd.errors import DetkdError
from detkd.models import build_model

REPO = Path(__file__).resolve().parents[2]
FIVE = {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}


def test_half_resolution_shifts_by_one_level() -> None:
    pairing = pair_levels(FIVE, FIVE, scale=0.5)
    assert pairing.mode == "shift" and pairing.shift == 1
    assert pairing.pairs == (("0", "1"), ("1", "2"), ("2", "3"), ("3", "pool"))
    assert "k=1" in pairing.describe() and "without a partner: pool" in pairing.describe()


def test_same_resolution_is_the_identity_and_quarter_shifts_by_two() -> None:
    assert pair_levels(FIVE, FIVE, scale=1.0).pairs == tuple((n, n) for n in FIVE)
    assert pair_levels(FIVE, FIVE, scale=0.25).pairs == (("0", "2"), ("1", "3"), ("2", "pool"))


def test_three_level_mobilenet_student_pairs_by_stride() -> None:
    config = load_config(REPO / "configs" / "voc" / "student_mnv3.yaml", ["model.weights_backbone=null"])
    mnv3 = feature_strides(build_model(config.model, 21).backbone)
    assert mnv3 == {"0": 32, "1": 32, "pool": 64}  # torchvision's 3-level MobileNetV3-Large FPN
    assert pair_levels(mnv3, FIVE, scale=1.0).pairs == (("0", "3"), ("1", "3"), ("pool", "pool"))
    assert pair_levels(mnv3, FIVE, scale=0.5).pairs == (("0", "pool"), ("1", "pool"))


def test_other_scales_resample_to_the_nearest_stride() -> None:
    pairing = pair_levels(FIVE, FIVE, scale=0.6)
    assert pairing.mode == "resample" and "bilinear" in pairing.describe()
    # student stride 4 at scale 0.6 covers 6.7 teacher pixels: nearest teacher stride 8
    assert dict(pairing.pairs)["0"] == "1" and dict(pairing.pairs)["3"] == "pool"


def test_no_partner_is_an_error_naming_both_level_sets() -> None:
    with pytest.raises(DetkdError, match=r"student strides \{'p6': 128\}.*teacher strides \{'0': 4"):
        pair_levels({"p6": 128}, {"0": 4, "1": 8}, scale=1.0)


def test_boxes_map_by_each_images_own_factors() -> None:
    scales = scale_factors([(100, 150), (120, 80)], [(200, 300), (300, 200)])
    assert scales.tolist() == [[2.0, 2.0], [2.5, 2.5]]
    boxes = map_boxes_to_teacher([torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[2.0, 2.0, 4.0, 8.0]])], scales)
    assert boxes[0].tolist() == [[2.0, 4.0, 6.0, 8.0]] and boxes[1].tolist() == [[5.0, 5.0, 10.0, 20.0]]


def test_resampled_maps_take_the_student_grid_and_mask_the_padding() -> None:
    teacher = torch.ones(2, 3, 10, 12)
    aligned, valid = align_teacher_map(teacher, (7, 8), [(50, 60), (40, 30)], [(80, 96), (64, 48)], 8, 8, "resample")
    assert aligned.shape == (2, 3, 7, 8) and valid.shape == (2, 1, 7, 8)
    assert valid[0].sum() == 7 * 8 and valid[1].sum() == 5 * 4  # ceil(40/8) x ceil(30/8)
    assert torch.equal(aligned[:, :1] > 0, valid)  # the constant map lands exactly on the valid cells


@pytest.mark.parametrize("student_preset", ["small", "tiny"])
def test_half_resolution_levels_meet_on_grids_of_the_same_size(student_preset: str) -> None:
    torch.manual_seed(0)
    teacher = build_model(ModelSection(preset="small", min_size=320, max_size=640), 4).eval()
    student = build_model(ModelSection(preset=student_preset, min_size=160, max_size=320), 4).eval()
    images = [torch.rand(3, 300, 420), torch.rand(3, 288, 384)]
    with torch.no_grad():
        t_list, _ = teacher.transform(images)
        s_list, _ = student.transform(images)
        t_feats, s_feats = teacher.backbone(t_list.tensors), student.backbone(s_list.tensors)
    scales = scale_factors(s_list.image_sizes, t_list.image_sizes)
    pairing = pair_levels(feature_strides(student.backbone), feature_strides(teacher.backbone), 1 / scales.mean().item())
    assert pairing.mode == "shift" and pairing.shift == 1 and len(pairing.pairs) == 4
    for s_name, t_name in pairing.pairs:
        s_map, t_map = s_feats[s_name], t_feats[t_name]
        assert abs(s_map.shape[-2] - t_map.shape[-2]) <= 1 and abs(s_map.shape[-1] - t_map.shape[-1]) <= 1
        stride_s, stride_t = pairing.student_strides[s_name], pairing.teacher_strides[t_name]
        aligned, valid = align_teacher_map(t_map, s_map.shape[-2:], s_list.image_sizes, t_list.image_sizes,
                                           stride_s, stride_t, pairing.mode)
        assert aligned.shape[-2:] == s_map.shape[-2:]
        for i, (rows, cols) in enumerate(valid_cells(s_list.image_sizes, stride_s)):
            rows, cols = min(rows, s_map.shape[-2]), min(cols, s_map.shape[-1])
            assert valid[i, 0].sum() == rows * cols and valid[i, 0, :rows, :cols].all()
            assert torch.equal(aligned[i, :, :rows, :cols], t_map[i, :, :rows, :cols])
