"""``model.torchvision``: a torchvision detection model built by its builder's name.

``torchvision.models.get_model(name, ...)`` builds exactly the model of torchvision's zoo
(e.g. ``fasterrcnn_resnet50_fpn_v2`` with its conv box head and GroupNorm, or
``fasterrcnn_mobilenet_v3_large_320_fpn`` with its 320 px input and 150 proposals), for the
data's ``num_classes``. The detkd keys that map onto the builder's keyword arguments (input
sizes, proposal counts, sampling, thresholds) are passed through when they differ from detkd's
defaults, so the builder's own defaults hold otherwise; a key the builder cannot take (the
backbone, its norm, the FPN width, the anchors, the box head width, a preset) is an error naming
it. Weights by name come from torch's cache (downloaded there first by detkd's check, which
refuses offline: see detkd.models.weights): detector
weights build the model as torchvision does for them (frozen BatchNorm, ``trainable_layers``
stages trained), then the class predictor is replaced for other classes, as in torchvision's
fine-tuning tutorial.
"""

from __future__ import annotations

import logging
from typing import Any

import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from detkd.config import ModelSection
from detkd.errors import DetkdError
from detkd.models.weights import cached_weights_path, load_checkpoint_weights, resolve_weights

log = logging.getLogger("detkd")

ZOO_BUILDERS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)
# detkd key -> FasterRCNN keyword argument (what torchvision's builders pass through **kwargs)
PASSED = {
    "min_size": "min_size", "max_size": "max_size",
    "rpn.pre_nms_top_n_train": "rpn_pre_nms_top_n_train", "rpn.pre_nms_top_n_test": "rpn_pre_nms_top_n_test",
    "rpn.post_nms_top_n_train": "rpn_post_nms_top_n_train", "rpn.post_nms_top_n_test": "rpn_post_nms_top_n_test",
    "rpn.nms_thresh": "rpn_nms_thresh", "rpn.fg_iou_thresh": "rpn_fg_iou_thresh",
    "rpn.bg_iou_thresh": "rpn_bg_iou_thresh", "rpn.batch_size_per_image": "rpn_batch_size_per_image",
    "rpn.positive_fraction": "rpn_positive_fraction",
    "roi.score_thresh": "box_score_thresh", "roi.nms_thresh": "box_nms_thresh",
    "roi.detections_per_img": "box_detections_per_img", "roi.fg_iou_thresh": "box_fg_iou_thresh",
    "roi.bg_iou_thresh": "box_bg_iou_thresh", "roi.batch_size_per_image": "box_batch_size_per_image",
    "roi.positive_fraction": "box_positive_fraction",
}
NOT_PASSED = ("preset", "backbone", "norm", "fpn_channels", "returned_layers", "rpn.anchor_sizes",
              "rpn.anchor_layout", "rpn.aspect_ratios", "roi.box_head_width")
MAX_TRAINABLE = {"resnet50": 5, "mobilenet_v3_large": 6}  # torchvision's bounds of trainable_backbone_layers


def classifier_of(builder: str) -> str:
    """The torchvision classification model inside ``builder``'s backbone (for its weights' short names)."""
    return "resnet50" if "resnet50" in builder else "mobilenet_v3_large"


def _value(cfg: ModelSection, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def builder_kwargs(cfg: ModelSection) -> dict[str, Any]:
    """The FasterRCNN keyword arguments of the keys ``cfg`` sets away from detkd's defaults.

    Raises:
        DetkdError: a key that the builder cannot take is set, naming it.
    """
    default = ModelSection()
    refused = [k for k in NOT_PASSED if _value(cfg, k) != _value(default, k)]
    if refused:
        raise DetkdError(f"model.torchvision: {cfg.torchvision} builds its own "
                         f"{', '.join('model.' + k for k in refused)}: remove them (the builder cannot take them)")
    return {arg: _value(cfg, k) for k, arg in PASSED.items() if _value(cfg, k) != _value(default, k)}


def check_builder(name: str) -> None:
    """``name`` is one of :data:`ZOO_BUILDERS` (the Faster R-CNN builders of torchvision)."""
    if name not in ZOO_BUILDERS:
        raise DetkdError(f"model.torchvision: unknown builder {name!r} (known: {', '.join(ZOO_BUILDERS)})")


def trainable_layers(cfg: ModelSection) -> int:
    """``model.trainable_layers`` as torchvision's ``trainable_backbone_layers`` (-1: all)."""
    top = MAX_TRAINABLE[classifier_of(cfg.torchvision)]
    if cfg.trainable_layers > top:
        raise DetkdError(f"model.trainable_layers: {cfg.trainable_layers} is more than {cfg.torchvision}'s {top} stages")
    return top if cfg.trainable_layers == -1 else cfg.trainable_layers


def build_zoo_model(cfg: ModelSection, num_classes: int) -> FasterRCNN:
    """torchvision's ``cfg.torchvision`` model for ``num_classes`` (K + 1), with ``cfg``'s weights."""
    check_builder(cfg.torchvision)
    kwargs = builder_kwargs(cfg)
    if cfg.weights:
        model = _from_detector_weights(cfg, kwargs, num_classes)
    elif cfg.weights_backbone:
        weights = resolve_weights(cfg.weights_backbone, "model.weights_backbone", classifier_of(cfg.torchvision))
        cached_weights_path(weights, "model.weights_backbone")  # in the cache (or refused offline) before torchvision
        model = torchvision.models.get_model(cfg.torchvision, weights=None, weights_backbone=weights,
                                             num_classes=num_classes,
                                             trainable_backbone_layers=trainable_layers(cfg), **kwargs)
    else:
        model = torchvision.models.get_model(cfg.torchvision, weights=None, weights_backbone=None,
                                             num_classes=num_classes, **kwargs)
    if cfg.checkpoint:
        load_checkpoint_weights(model, cfg.checkpoint)
    return model


def _from_detector_weights(cfg: ModelSection, kwargs: dict[str, Any], num_classes: int) -> FasterRCNN:
    """Built with ``model.weights`` as torchvision builds it, then the predictor for ``num_classes``."""
    weights = resolve_weights(cfg.weights, "model.weights", cfg.torchvision)
    log.info("model.weights: %s from %s", cfg.weights, cached_weights_path(weights, "model.weights"))  # cached first
    model = torchvision.models.get_model(cfg.torchvision, weights=weights, weights_backbone=None,
                                         trainable_backbone_layers=trainable_layers(cfg), **kwargs)
    predictor = model.roi_heads.box_predictor
    if predictor.cls_score.out_features != num_classes:
        log.info("model.weights: the class predictor is trained from scratch (%d classes, not %d)",
                 num_classes, predictor.cls_score.out_features)
        model.roi_heads.box_predictor = FastRCNNPredictor(predictor.cls_score.in_features, num_classes)
    return model

