"""Backbones with FPN, by name (a timm-like registry): ResNet-18/34/50/101 and MobileNetV3-Large.

Every builder returns torchvision's own :class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`
over torchvision's own classifier network, so the state-dict keys are exactly those of
torchvision's detectors (``backbone.body.*``, ``backbone.fpn.*``) and their COCO weights load.

Feature levels: the FPN gets one input per *returned stage* plus torchvision's ``LastLevelMaxPool``
(key ``"pool"``), so a backbone has ``len(returned_layers) + 1`` levels:

- ResNet: stages 1..4 are ``layer1..layer4`` (strides 4, 8, 16, 32); default ``[1, 2, 3, 4]``
  (5 levels, strides 4..64, as ``fasterrcnn_resnet50_fpn``). Stages after the last returned one
  are left out of the network entirely (``[1, 2, 3]`` is a ResNet truncated after ``layer3``).
- MobileNetV3-Large: stages 0..5 are the strided blocks of ``features`` as torchvision's
  ``_mobilenet_extractor`` finds them (strides 2, 4, 8, 16, 32, and the last 960-channel conv
  at 32); default ``[4, 5]`` (3 levels, strides 32, 32, 64, as
  ``fasterrcnn_mobilenet_v3_large_fpn``).

``trainable_layers`` counts trainable stages from the top, as in torchvision (ResNet 0..5, where
5 includes the stem; MobileNetV3 0..6); ``-1`` means all.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import mobilenet_v3_large, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detkd.config import ModelSection
from detkd.models.backbone_parts import (
    BackboneInfo,
    check_returned,
    check_trainable,
    fpn_norm_layer,
    load_trunk_state,
    norm_layer,
)
from detkd.models.feature_backbone import build_feature_fpn, feature_backbones
from detkd.models.weights import StateDict
from detkd.registry import Registry

BackboneBuilder = Callable[[ModelSection, StateDict | None, str], BackboneInfo]
BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def freeze_resnet(trunk: resnet.ResNet, trainable: int) -> None:
    """Freeze all but the top ``trainable`` stages (torchvision's rule; 5 includes the stem)."""
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        layers_to_train.append("bn1")
    for name, parameter in trunk.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)


def build_resnet_fpn(cfg: ModelSection, state: StateDict | None = None, source: str = "") -> BackboneInfo:
    """A ResNet classifier from torchvision, frozen by stage, under an FPN of ``cfg.fpn_channels``."""
    trunk = getattr(resnet, cfg.backbone)(weights=None, norm_layer=norm_layer(cfg.norm, cfg.backbone))
    load_trunk_state(trunk, state, source)
    freeze_resnet(trunk, check_trainable(cfg, 5))
    returned = check_returned(cfg, [1, 2, 3, 4], range(1, 5))
    width = trunk.inplanes // 8  # channels of layer1's output (64 for ResNet-18/34, 256 for 50/101)
    in_channels = [width * 2 ** (k - 1) for k in returned]
    module = BackboneWithFPN(
        trunk,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(returned)},
        in_channels_list=in_channels,
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=fpn_norm_layer(cfg.norm),
    )
    strides = [2 ** (k + 1) for k in returned]
    return BackboneInfo(module, len(returned) + 1, strides + [strides[-1] * 2], [str(i) for i in range(len(returned))])


for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    BACKBONES.register(_name)(build_resnet_fpn)


def mobilenet_stages(features: nn.Sequential) -> list[int]:
    """Indices in ``features`` of the stage outputs, as torchvision's ``_mobilenet_extractor``."""
    return [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]


@BACKBONES.register("mobilenet_v3_large")
def build_mobilenet_v3_large_fpn(cfg: ModelSection, state: StateDict | None = None, source: str = "") -> BackboneInfo:
    """MobileNetV3-Large's ``features`` under an FPN, laid out as torchvision's ``_mobilenet_extractor``."""
    classifier = mobilenet_v3_large(weights=None, norm_layer=norm_layer(cfg.norm, cfg.backbone))
    load_trunk_state(classifier, state, source)
    features = classifier.features
    stages = mobilenet_stages(features)
    trainable = check_trainable(cfg, len(stages))
    freeze_before = len(features) if trainable == 0 else stages[len(stages) - trainable]
    for block in features[:freeze_before]:
        block.requires_grad_(False)
    returned = check_returned(cfg, [len(stages) - 2, len(stages) - 1], range(len(stages)))
    module = BackboneWithFPN(
        features,
        return_layers={str(stages[k]): str(i) for i, k in enumerate(returned)},
        in_channels_list=[features[stages[k]].out_channels for k in returned],
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=fpn_norm_layer(cfg.norm),
    )
    strides = [mobilenet_stride(features, stages[k]) for k in returned]
    return BackboneInfo(module, len(returned) + 1, strides + [strides[-1] * 2], [str(i) for i in range(len(returned))])


def mobilenet_stride(features: nn.Sequential, index: int) -> int:
    """The output stride of ``features[index]``: 2 to the number of strided blocks up to it."""
    strided = 1 + sum(1 for b in features[1 : index + 1] if getattr(b, "_is_cn", False))
    return 2**strided


def _register_feature_backbones() -> None:
    """Every torchvision classifier CNN not built above, through feature extraction
    (:mod:`detkd.models.feature_backbone`)."""
    for name in feature_backbones():
        if name not in BACKBONES:
            BACKBONES.register(name)(build_feature_fpn)


_register_feature_backbones()
