"""What every backbone builder shares: :class:`BackboneInfo` (what the detector head needs to
know), the norm layers of ``model.norm``, and the checks of ``model.returned_layers`` and
``model.trainable_layers``. The hand-built backbones (:mod:`detkd.models.backbones`) and the
feature-extraction ones (:mod:`detkd.models.feature_backbone`) both build on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.misc import FrozenBatchNorm2d

from detkd.config import ModelSection
from detkd.errors import DetkdError
from detkd.models.weights import StateDict, load_state_checked

NormLayer = Callable[[int], nn.Module]


@dataclass
class BackboneInfo:
    """What the detector head needs to know about a backbone with FPN."""

    module: BackboneWithFPN
    num_levels: int  # FPN outputs, including "pool"
    strides: list[int]  # of each level, in pixels of the network input
    featmap_names: list[str]  # levels RoIAlign pools from (all but "pool")


def group_norm_groups(num_channels: int, max_groups: int = 32, min_per_group: int = 2) -> int:
    """Groups for GroupNorm: the largest divisor of ``num_channels`` up to 32 that leaves at least
    two channels a group (32 for every ResNet width; 12 for MobileNet's 24 channels, ...)."""
    for groups in range(min(max_groups, num_channels // min_per_group), 0, -1):
        if num_channels % groups == 0:
            return groups
    return 1


def group_norm(num_channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_norm_groups(num_channels), num_channels)


def norm_layer(name: str, backbone: str) -> NormLayer:
    """The norm layer of ``model.norm`` (frozen_bn | bn | gn), called as ``norm(num_channels)``."""
    if name == "frozen_bn":
        return FrozenBatchNorm2d
    if name == "bn":  # MobileNetV3's own BatchNorm settings, as torchvision's classifier uses
        return partial(nn.BatchNorm2d, eps=0.001, momentum=0.01) if backbone.startswith("mobilenet") else nn.BatchNorm2d
    if name == "gn":
        return group_norm
    raise DetkdError(f"model.norm: unknown norm {name!r} (known: bn, frozen_bn, gn)")


def fpn_norm_layer(name: str) -> NormLayer | None:
    """GroupNorm also normalises the FPN convs (as detectron2's GN models); with BatchNorm the FPN
    stays plain, as in torchvision's ``fasterrcnn_resnet50_fpn`` (so its COCO weights load)."""
    return group_norm if name == "gn" else None


def load_trunk_state(trunk: nn.Module, state: StateDict | None, source: str) -> None:
    """Load a torchvision classifier's weights into ``trunk`` (strict; errors name ``source``)."""
    if state is not None:
        load_state_checked(trunk, state, source, what="backbone")


def check_returned(cfg: ModelSection, default: list[int], valid: range) -> list[int]:
    layers = list(cfg.returned_layers) if cfg.returned_layers else default
    if sorted(set(layers)) != layers or layers[0] not in valid or layers[-1] not in valid:
        raise DetkdError(
            f"model.returned_layers: {layers} for {cfg.backbone}: expected increasing stage numbers "
            f"in {valid.start}..{valid.stop - 1}"
        )
    return layers


def check_trainable(cfg: ModelSection, num_stages: int) -> int:
    if cfg.trainable_layers == -1:
        return num_stages
    if not 0 <= cfg.trainable_layers <= num_stages:
        raise DetkdError(
            f"model.trainable_layers: {cfg.trainable_layers} for {cfg.backbone}: expected 0..{num_stages} "
            "(stages trained, counted from the top) or -1 (all)"
        )
    return cfg.trainable_layers
