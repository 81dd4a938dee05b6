"""build_model: presets, anchors, heads, and compatibility with torchvision's own detectors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN

from detkd.config import ModelSection, load_config
from detkd.errors import DetkdError
from detkd.models import PRESETS, build_model, resolve_model_config
from detkd.models.weights import state_mismatches


def targets(n: int = 2) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [40.0, 20.0, 60.0, 36.0]])[:n]
    extra = {"image_id": "x", "difficult": torch.zeros(n, dtype=torch.bool)}  # keys the model must ignore
    return [{"boxes": boxes, "labels": torch.arange(1, n + 1), **extra}]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_train_and_infer(preset):
    torch.manual_seed(0)
    model = build_model(ModelSection(preset=preset, min_size=96, max_size=96), num_classes=4)
    assert isinstance(model, FasterRCNN)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    model.train()
    losses = model([torch.rand(3, 80, 96)], targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert math.isfinite(float(total.detach()))
    total.backward()
    assert all(p.grad is not None for p in model.backbone.body.parameters()), "every stage trains from scratch"
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 80, 96), torch.rand(3, 64, 64)])
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4 and out[0]["labels"].dtype == torch.int64


def test_model_fields_reach_torchvision():
    cfg = ModelSection(backbone="resnet18", norm="gn", fpn_channels=32, min_size=200, max_size=300)
    cfg.rpn.anchor_sizes, cfg.rpn.post_nms_top_n_test, cfg.rpn.fg_iou_thresh = [8, 16, 32, 64, 128], 77, 0.6
    cfg.roi.box_head_width, cfg.roi.batch_size_per_image, cfg.roi.detections_per_img = 48, 64, 33
    model = build_model(cfg, num_classes=7)
    assert model.transform.min_size == (200,) and model.transform.max_size == 300
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.rpn._post_nms_top_n["testing"] == 77 and model.rpn.proposal_matcher.high_threshold == 0.6
    assert model.roi_heads.box_head.fc6.in_features == 32 * 7 * 7
    assert model.roi_heads.box_head.fc7.out_features == 48
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 7 * 4
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 64 and model.roi_heads.detections_per_img == 33


def test_anchor_count_must_match_levels():
    cfg = ModelSection(backbone="mobilenet_v3_large", norm="bn")
    with pytest.raises(DetkdError, match=r"anchor_sizes has 5 sizes .* 3 FPN levels \(strides 32, 32, 64\)"):
        build_model(cfg, 3)
    cfg.rpn.anchor_layout = "all_levels"
    model = build_model(cfg, 3)
    assert model.rpn.anchor_generator.num_anchors_per_location() == [15, 15, 15]


@pytest.mark.parametrize(
    "backbone, builder",
    [("resnet50", "fasterrcnn_resnet50_fpn"), ("mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn")],
)
def test_same_state_dict_as_torchvision(backbone, builder):
    """The default configs have torchvision's keys and shapes, so its COCO weights load."""
    cfg = ModelSection(backbone=backbone)
    if backbone.startswith("mobilenet"):
        cfg.rpn.anchor_layout = "all_levels"
    reference = getattr(torchvision.models.detection, builder)(weights=None, weights_backbone=None, num_classes=91)
    assert state_mismatches(build_model(cfg, 91), reference.state_dict()) == []


def test_preset_fills_only_fields_left_at_default():
    cfg = ModelSection(preset="small", min_size=160, fpn_channels=96)
    cfg.rpn.post_nms_top_n_test = 300
    resolved = resolve_model_config(cfg)
    assert resolved.preset is None
    assert (resolved.min_size, resolved.fpn_channels, resolved.rpn.post_nms_top_n_test) == (160, 96, 300)
    small = PRESETS["small"]
    assert (resolved.backbone, resolved.norm, resolved.max_size) == (small["backbone"], "gn", small["max_size"])
    assert resolved.rpn.anchor_sizes == small["rpn"]["anchor_sizes"]
    assert resolved.roi.box_head_width == small["roi"]["box_head_width"]
    assert resolved.roi.nms_thresh == ModelSection().roi.nms_thresh, "fields the preset does not name keep defaults"
    assert resolve_model_config(resolved) == resolved
    again = dataclasses.replace(resolved, preset="small")
    assert resolve_model_config(again) == resolved, "applying a preset twice changes nothing"
    with pytest.raises(DetkdError, match="unknown preset 'huge'"):
        resolve_model_config(ModelSection(preset="huge"))


def test_preset_from_yaml_with_override(tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text("model:\n  preset: tiny\n  min_size: 160\n")
    cfg = load_config(path, ["model.roi.box_head_width=64"])
    resolved = resolve_model_config(cfg.model)
    assert (resolved.backbone, resolved.min_size, resolved.roi.box_head_width) == ("mobilenet_v3_large", 160, 64)
    assert build_model(cfg.model, 3).roi_heads.box_head.fc7.out_features == 64
