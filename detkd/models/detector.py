"""``build_model``: a torchvision Faster R-CNN from a :class:`~detkd.config.ModelSection`.

The result is an ordinary :class:`torchvision.models.detection.FasterRCNN` made of torchvision
modules only (its backbone, :class:`~torchvision.models.detection.rpn.AnchorGenerator`,
:class:`~torchvision.models.detection.faster_rcnn.TwoMLPHead`, ...), so its state dict loads into
a FasterRCNN that anyone builds with the same arguments. The steps:

0. ``model.torchvision`` set: torchvision's own builder of that name (:mod:`detkd.models.zoo`);
   otherwise:
1. apply the preset (:func:`~detkd.config.presets.resolve_model_config`);
2. the backbone with FPN from the registry (:data:`~detkd.models.backbones.BACKBONES`), with
   ``weights_backbone`` loaded into its classifier first;
3. anchors (checked against the backbone's FPN levels), RPN, RoI pooling over every level but
   ``pool``, the two-FC box head of ``roi.box_head_width`` and the predictor;
4. ``weights`` (a torchvision detector) or ``checkpoint`` loaded over the whole model.

Inputs and outputs are torchvision's: a list of float images ``[3, H, W]`` in [0, 1]; in training
mode with targets (``boxes [N, 4]`` xyxy, ``labels [N]`` int64 in 1..K) it returns the loss dict,
in eval mode a list of ``{"boxes" [D, 4], "scores" [D], "labels" [D]}``.
"""

from __future__ import annotations

import logging

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from detkd.config import ModelSection
from detkd.config.presets import resolve_model_config
from detkd.errors import DetkdError
from detkd.models.backbone_parts import BackboneInfo
from detkd.models.backbones import BACKBONES
from detkd.models.weights import (
    backbone_weights,
    detector_weights,
    load_cached_weights,
    load_checkpoint_weights,
    load_detector_weights,
    load_matching_weights,
)
from detkd.models.zoo import build_zoo_model

log = logging.getLogger("detkd")

ROI_OUTPUT_SIZE = 7  # torchvision's MultiScaleRoIAlign for Faster R-CNN


def build_model(cfg: ModelSection, num_classes: int) -> FasterRCNN:
    """A Faster R-CNN for ``num_classes`` (K object classes + 1 background) as ``cfg`` describes.

    Raises:
        DetkdError: an unknown backbone/norm/preset, anchors that do not fit the FPN levels,
            weights that are not in torch's cache, or weights that do not fit the model.
    """
    if num_classes < 2:
        raise DetkdError(f"the model needs at least one object class (num_classes = K + 1 = {num_classes})")
    if cfg.torchvision:
        return build_zoo_model(cfg, num_classes)
    cfg = resolve_model_config(cfg)
    source = pretrained_source(cfg)
    backbone_state, state_path = None, ""
    if source == "weights_backbone":
        backbone_state, state_path = load_cached_weights(
            backbone_weights(cfg.weights_backbone, cfg.backbone), "model.weights_backbone"
        )
    elif source is None and cfg.norm == "frozen_bn":
        log.warning("model.norm frozen_bn without pretrained weights: the backbone is not normalised; "
                    "use norm: gn (or a preset) to train from scratch")
    info = BACKBONES.get(cfg.backbone)(cfg, backbone_state, state_path)
    model = assemble(cfg, info, num_classes)
    if source == "weights":
        load_detector_weights(model, detector_weights(cfg.weights, cfg.backbone))
    elif source == "checkpoint" and cfg.checkpoint_matching:
        load_matching_weights(model, cfg.checkpoint)
    elif source == "checkpoint":
        load_checkpoint_weights(model, cfg.checkpoint)
    return model


def pretrained_source(cfg: ModelSection) -> str | None:
    """Which weights to start from: the most complete one given (checkpoint > weights > weights_backbone)."""
    given = [k for k in ("checkpoint", "weights", "weights_backbone") if getattr(cfg, k)]
    if len(given) > 1:
        log.info("model.%s is loaded; model.%s not (it would be overwritten)", given[0], " and model.".join(given[1:]))
    return given[0] if given else None


def assemble(cfg: ModelSection, info: BackboneInfo, num_classes: int) -> FasterRCNN:
    """The detector around a backbone: anchors, RPN, RoI heads and the input transform."""
    rpn, roi = cfg.rpn, cfg.roi
    pooler = MultiScaleRoIAlign(featmap_names=info.featmap_names, output_size=ROI_OUTPUT_SIZE, sampling_ratio=2)
    box_head = TwoMLPHead(cfg.fpn_channels * ROI_OUTPUT_SIZE**2, roi.box_head_width)
    return FasterRCNN(
        info.module,
        num_classes=None,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        rpn_anchor_generator=anchor_generator(cfg, info),
        rpn_pre_nms_top_n_train=rpn.pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn.post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn.post_nms_top_n_test,
        rpn_nms_thresh=rpn.nms_thresh,
        rpn_fg_iou_thresh=rpn.fg_iou_thresh,
        rpn_bg_iou_thresh=rpn.bg_iou_thresh,
        rpn_batch_size_per_image=rpn.batch_size_per_image,
        rpn_positive_fraction=rpn.positive_fraction,
        box_roi_pool=pooler,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(roi.box_head_width, num_classes),
        box_score_thresh=roi.score_thresh,
        box_nms_thresh=roi.nms_thresh,
        box_detections_per_img=roi.detections_per_img,
        box_fg_iou_thresh=roi.fg_iou_thresh,
        box_bg_iou_thresh=roi.bg_iou_thresh,
        box_batch_size_per_image=roi.batch_size_per_image,
        box_positive_fraction=roi.positive_fraction,
    )


def anchor_generator(cfg: ModelSection, info: BackboneInfo) -> AnchorGenerator:
    """Anchors for each FPN level: one size a level (``per_level``) or all sizes at every level
    (``all_levels``, torchvision's MobileNetV3-FPN); the aspect ratios at every level."""
    sizes, ratios = tuple(cfg.rpn.anchor_sizes), tuple(float(r) for r in cfg.rpn.aspect_ratios)
    if not sizes or not ratios:
        raise DetkdError("model.rpn.anchor_sizes and model.rpn.aspect_ratios must not be empty")
    if cfg.rpn.anchor_layout == "all_levels":
        per_level = (sizes,) * info.num_levels
    elif cfg.rpn.anchor_layout == "per_level":
        if len(sizes) != info.num_levels:
            strides = ", ".join(map(str, info.strides))
            raise DetkdError(
                f"model.rpn.anchor_sizes has {len(sizes)} sizes {list(sizes)}, but {cfg.backbone} with "
                f"returned_layers {cfg.returned_layers or 'default'} has {info.num_levels} FPN levels "
                f"(strides {strides}): give {info.num_levels} sizes, one per level, or set "
                "model.rpn.anchor_layout: all_levels to put every size at every level"
            )
        per_level = tuple((s,) for s in sizes)
    else:
        raise DetkdError(f"model.rpn.anchor_layout: unknown layout {cfg.rpn.anchor_layout!r} (per_level, all_levels)")
    return AnchorGenerator(per_level, (ratios,) * info.num_levels)
