"""Any torchvision classification CNN as a detection backbone, through feature extraction.

``model.backbone: regnet_y_400mf`` (or ``efficientnet_b0``, ``convnext_tiny``,
``resnext50_32x4d``, ``mobilenet_v3_small``, ...): the classifier from
``torchvision.models.get_model`` (its ImageNet weights by name from the cache, via
``model.weights_backbone``), its stage outputs found by a probe forward, cut with
``torchvision.models.feature_extraction.create_feature_extractor`` (everything after the last
returned stage is pruned), under ``torchvision.ops.FeaturePyramidNetwork`` with
``LastLevelMaxPool``. The state-dict keys are ``backbone.body.*`` and ``backbone.fpn.*`` as in
torchvision's detectors, and strides and channels come from the probe, so level pairing and
adapters work unchanged.

Stages: for each output stride 4, 8, 16, 32, the shallowest module producing it, the last one of
that depth to run (``layer1`` for a ResNet, ``trunk_output.block1`` for a RegNet,
``features.2`` for an EfficientNet); they are numbered 1..4 as a ResNet's (default
``returned_layers`` ``[1, 2, 3, 4]``). ``trainable_layers`` counts stages from the top as for a
ResNet (the stem goes with stage 1: 4 and 5 both train everything). ``norm``: ``bn`` keeps the classifier's
BatchNorm, ``frozen_bn`` and ``gn`` replace every BatchNorm2d.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from detkd.config import FEATURE_FAMILIES, ModelSection
from detkd.errors import DetkdError
from detkd.models.backbone_parts import BackboneInfo, check_returned, check_trainable, fpn_norm_layer, group_norm
from detkd.models.weights import StateDict, load_state_checked

STAGE_STRIDES = (4, 8, 16, 32)
PROBE = 256


def feature_backbones() -> list[str]:
    """The torchvision classifiers this module serves (CNNs with NCHW feature maps)."""
    names = torchvision.models.list_models(module=torchvision.models)
    return [n for n in names if n.startswith(FEATURE_FAMILIES)]


class FeatureFPN(nn.Module):
    """``body`` (a feature extractor returning ``{"0": C_a, ...}``) under ``fpn``; ``out_channels``
    as torchvision's BackboneWithFPN. ``forward(x [B, 3, H, W])`` -> ``{"0", ..., "pool"}``."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int, norm: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool(), norm_layer=norm)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(OrderedDict(self.body(x)))


def find_stages(classifier: nn.Module) -> tuple[list[str], list[int]]:
    """The module names of the stage outputs (strides 4..32, see the module docstring) and
    their channels, from a probe forward with hooks; every module's run order is recorded too."""
    seen: list[tuple[str, int, int]] = []  # (name, stride, channels) in run order

    def hook(name: str):
        def record(_module: nn.Module, _inputs, output) -> None:
            if isinstance(output, Tensor) and output.dim() == 4 and PROBE % output.shape[-1] == 0:
                seen.append((name, PROBE // output.shape[-1], output.shape[1]))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in classifier.named_modules() if n]
    was_training = classifier.training
    with torch.no_grad():
        classifier.eval()(torch.zeros(1, 3, PROBE, PROBE))
    classifier.train(was_training)
    for h in handles:
        h.remove()
    names, channels = [], []
    for stride in STAGE_STRIDES:
        found = [(n.count("."), i, n, c) for i, (n, s, c) in enumerate(seen) if s == stride]
        if not found:
            raise DetkdError(f"model.backbone: no stage of stride {stride} found (not a CNN with feature maps?)")
        depth = min(f[0] for f in found)
        _, _, name, c = max(f for f in found if f[0] == depth)
        names.append(name)
        channels.append(c)
    return names, channels


def replace_batchnorm(module: nn.Module, norm: str) -> None:
    """Every BatchNorm2d as FrozenBatchNorm2d (its statistics and affine kept) or GroupNorm."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if norm == "frozen_bn":
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(module, name, frozen)
            else:
                setattr(module, name, group_norm(child.num_features))
        else:
            replace_batchnorm(child, norm)


def freeze_stages(classifier: nn.Module, stages: list[str], trainable: int) -> None:
    """Train only the top ``trainable`` stages: a module's stage is the number of stage outputs
    completed before it first runs (0: the stem and stage 1, ..., 3: stage 4), and the modules of
    stages below ``4 - trainable`` are frozen (4 and 5 train everything)."""
    completed, unit = [0], {}

    def count(*_) -> None:
        completed[0] += 1

    def first_run(name: str):
        def record(*_) -> None:  # a pre-hook returning a value would replace the module's input
            unit.setdefault(name, completed[0])
        return record

    modules = dict(classifier.named_modules())
    handles = [modules[s].register_forward_hook(count) for s in stages]
    handles += [m.register_forward_pre_hook(first_run(n)) for n, m in modules.items() if n]
    with torch.no_grad():
        was_training = classifier.training
        classifier.eval()(torch.zeros(1, 3, PROBE, PROBE))
        classifier.train(was_training)
    for h in handles:
        h.remove()
    for name, stage in unit.items():
        if stage < 4 - trainable:
            for p in modules[name].parameters(recurse=False):
                p.requires_grad_(False)


def build_feature_fpn(cfg: ModelSection, state: StateDict | None = None, source: str = "") -> BackboneInfo:
    """The backbone with FPN of a torchvision classifier (see the module docstring)."""
    classifier = torchvision.models.get_model(cfg.backbone, weights=None)
    if state is not None:
        load_state_checked(classifier, state, source, what="backbone")
    if cfg.norm != "bn":
        replace_batchnorm(classifier, cfg.norm)
    stages, channels = find_stages(classifier)
    freeze_stages(classifier, stages, check_trainable(cfg, 5))
    returned = check_returned(cfg, [1, 2, 3, 4], range(1, 5))
    body = create_feature_extractor(classifier, {stages[k - 1]: str(i) for i, k in enumerate(returned)})
    module = FeatureFPN(body, [channels[k - 1] for k in returned], cfg.fpn_channels, fpn_norm_layer(cfg.norm))
    strides = [STAGE_STRIDES[k - 1] for k in returned]
    return BackboneInfo(module, len(returned) + 1, strides + [strides[-1] * 2], [str(i) for i in range(len(returned))])
