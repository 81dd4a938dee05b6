"""Backbones with FPN: levels, channels, norm layers and which parameters train."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from detkd.config import ModelSection
from detkd.errors import DetkdError
from detkd.models.backbone_parts import group_norm_groups
from detkd.models.backbones import BACKBONES

# backbone -> (default levels, default strides)
EXPECTED = {
    "resnet18": (5, [4, 8, 16, 32, 64]),
    "resnet34": (5, [4, 8, 16, 32, 64]),
    "resnet50": (5, [4, 8, 16, 32, 64]),
    "resnet101": (5, [4, 8, 16, 32, 64]),
    "mobilenet_v3_large": (3, [32, 32, 64]),  # as torchvision's fasterrcnn_mobilenet_v3_large_fpn
}


def build(backbone: str, **fields):
    return BACKBONES.get(backbone)(ModelSection(backbone=backbone, **fields))


def test_registry_lists_every_backbone():
    from detkd.models.feature_backbone import feature_backbones

    assert BACKBONES.names() == sorted([*EXPECTED, *feature_backbones()])
    assert {"regnet_y_400mf", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_small"} <= set(BACKBONES.names())
    with pytest.raises(DetkdError, match="did you mean 'resnet18'"):
        BACKBONES.get("resnet_18")


@pytest.mark.parametrize("backbone", sorted(EXPECTED))
def test_levels_and_channels(backbone):
    levels, strides = EXPECTED[backbone]
    info = build(backbone, fpn_channels=32, norm="bn")
    assert info.num_levels == levels and info.strides == strides
    assert info.module.out_channels == 32
    with torch.no_grad():
        out = info.module.eval()(torch.rand(1, 3, 128, 128))
    assert list(out) == info.featmap_names + ["pool"]
    for (name, feature), stride in zip(out.items(), strides, strict=True):
        assert feature.shape == (1, 32, 128 // stride, 128 // stride), name


def test_returned_layers_truncate_the_resnet():
    info = build("resnet18", returned_layers=[1, 2, 3])
    body = dict(info.module.body.named_children())
    assert "layer3" in body and "layer4" not in body
    assert info.num_levels == 4 and info.strides == [4, 8, 16, 32]
    with pytest.raises(DetkdError, match="model.returned_layers"):
        build("resnet18", returned_layers=[0, 1])


def test_group_norm_everywhere():
    for backbone in ("resnet18", "mobilenet_v3_large"):
        module = build(backbone, norm="gn", fpn_channels=64).module
        kinds = {type(m) for m in module.modules()}
        assert nn.GroupNorm in kinds and not kinds & {nn.BatchNorm2d, FrozenBatchNorm2d}, backbone
        fpn_norms = [m for m in module.fpn.modules() if isinstance(m, nn.GroupNorm)]
        assert fpn_norms, "GroupNorm also normalises the FPN"
        for m in module.modules():
            if isinstance(m, nn.GroupNorm):
                assert m.num_channels % m.num_groups == 0 and m.num_channels // m.num_groups >= 2
    assert group_norm_groups(256) == 32 and group_norm_groups(24) == 12 and group_norm_groups(3) == 1


def test_frozen_bn_is_the_default_norm():
    module = build("resnet18").module
    assert any(isinstance(m, FrozenBatchNorm2d) for m in module.body.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in module.modules())


def trainable_prefixes(module: nn.Module) -> set[str]:
    return {n.split(".")[0] for n, p in module.body.named_parameters() if p.requires_grad}


def test_trainable_layers_resnet():
    assert trainable_prefixes(build("resnet18", norm="bn", trainable_layers=2).module) == {"layer3", "layer4"}
    assert trainable_prefixes(build("resnet18", norm="bn", trainable_layers=0).module) == set()
    every = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert trainable_prefixes(build("resnet18", norm="bn", trainable_layers=5).module) == every
    assert trainable_prefixes(build("resnet18", norm="bn", trainable_layers=-1).module) == every
    fpn = build("resnet18", trainable_layers=0).module.fpn
    assert all(p.requires_grad for p in fpn.parameters()), "the FPN always trains"
    with pytest.raises(DetkdError, match="trainable_layers: 6 for resnet18: expected 0..5"):
        build("resnet18", trainable_layers=6)


def test_trainable_layers_mobilenet():
    # stages start at features 0, 2, 4, 7, 13, 16: three trainable stages are blocks 7 and later
    module = build("mobilenet_v3_large", norm="bn", trainable_layers=3).module
    assert {int(p) for p in trainable_prefixes(module)} == set(range(7, 17))
    assert trainable_prefixes(build("mobilenet_v3_large", norm="bn", trainable_layers=-1).module) == {
        str(i) for i in range(17)
    }
