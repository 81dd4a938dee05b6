"""The config schema: each section a dataclass, each key a field with its ``help`` and allowed values.

A field is made by :func:`opt` (its default, help and ``choices`` / ``pattern`` / ``bounds``) or
:func:`section` (a nested dataclass); the loader (:mod:`detkd.config.load`), the saver and
``docs/CONFIG.md`` (``tools/config_reference.py``) follow the type hints and this metadata, so
adding a key is adding a field here. The choice lists (:data:`FORMATS`, :data:`BACKBONES`,
:data:`CLS_LOSSES`, :data:`HINT_LOSSES`, ...) are copies of the registries of higher floors, which
config cannot import; ``tests/config/test_choices_match_registries.py`` holds each equal to its registry.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from detkd.config.presets import PRESETS, resolve_model_config

FORMATS = ("voc", "kitti", "coco", "synth")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")  # built by hand (detkd.models.backbones)
FEATURE_FAMILIES = ("regnet_", "efficientnet_", "convnext_", "resnext", "wide_resnet", "resnet152",
                    "mobilenet_v2", "mobilenet_v3_small", "mnasnet", "shufflenet_")  # through feature extraction
NORMS = ("frozen_bn", "bn", "gn")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine")


@dataclass(frozen=True)
class Range:
    """The numbers a key accepts (each element, for a list): ``lo`` and ``hi`` bounds, inclusive
    unless ``lo_open`` / ``hi_open``; None: unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return self.hi is None or not (value > self.hi or (self.hi_open and value == self.hi))

    def text(self) -> str:
        """``> 0``, ``>= 1``, ``0 to 1``, ``> 0 and <= 1``: how docs/CONFIG.md and errors say it."""
        low = None if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        high = None if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        if low and high and not (self.lo_open or self.hi_open):
            return f"{self.lo:g} to {self.hi:g}"
        return " and ".join(t for t in (low, high) if t)


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(0), Range(1)
UNIT, UNIT_OPEN_LOW = Range(0, 1), Range(0, 1, lo_open=True)


def opt(default: Any, help: str = "", choices: Sequence[str] | None = None,
        pattern: tuple[str, str] | None = None, bounds: Range | None = None) -> Any:
    """A dataclass field with its documentation (``help``) and allowed values: ``choices``, a
    ``pattern`` given as ``(regular expression, what it accepts in words)``, or numeric
    ``bounds`` (checked on each element of a list).

    Mutable defaults (lists, dicts) get a ``default_factory`` that copies them.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "pattern": pattern, "bounds": bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, help: str = "") -> Any:
    """A nested section (a dataclass field holding another dataclass)."""
    return field(default_factory=cls, metadata={"help": help or (cls.__doc__ or "").strip()})


# --- training (``detkd train``) -----------------------------------------------------------------


@dataclass
class AugmentSection:
    """Box-aware training augmentation (see :mod:`detkd.data.transforms`); off for evaluation."""

    hflip: float = opt(0.5, "probability of a horizontal flip", bounds=UNIT)
    vflip: float = opt(0.0, "probability of a vertical flip (data without an up, e.g. microscopy)", bounds=UNIT)
    scale_jitter: list[float] | None = opt(None, "[lo, hi] object-scale factors, canvas size kept; null: off", bounds=POSITIVE)
    brightness: float = opt(0.0, "colour jitter strength (0: off)", bounds=NON_NEGATIVE)
    contrast: float = opt(0.0, "colour jitter strength (0: off)", bounds=NON_NEGATIVE)
    hue: float = opt(0.0, "colour jitter strength (0: off)", bounds=Range(0, 0.5))
    saturation: float = opt(0.0, "colour jitter strength (0: off)", bounds=NON_NEGATIVE)


@dataclass
class SynthSection:
    """The embedded dataset, generated on first use into ``cache_dir`` when ``data.format`` is synth."""

    images: int = opt(1000, "number of images generated (train and test together)", bounds=AT_LEAST_1)
    seed: int = opt(0, "generator seed; images, seed, profile and cache_dir identify the cached copy")
    profile: str = opt("standard", "standard: the full dataset (objects of 8-128 px on 288-384 px images); "
                       "easy: 16-64 px objects on 112-144 px images, little clutter; demo: the demo's, 16-80 px "
                       "objects on 224-288 px images, little clutter", ("standard", "easy", "demo"))
    cache_dir: str = opt("~/.cache/detkd", "where the generated dataset is kept")


@dataclass
class UnlabeledSection:
    """A transfer set (Hinton et al. 2015): images without labels that the teacher annotates for the
    student. Distillation runs only; give one source (``split``, ``folder`` or ``synth_images``)."""

    split: str | None = opt(None, "a split of data.root whose annotations are ignored (its images only)")
    folder: str | None = opt(None, "a folder of images (.jpg, .jpeg, .png, .bmp), read in name order")
    synth_images: int = opt(0, "synth: the first N training images of the same seed and profile after the labelled "
                            "ones (for the demo: the teacher's own training images)", bounds=NON_NEGATIVE)
    share: float = opt(0.5, "share of each epoch's samples drawn from the transfer set; an epoch keeps the labelled "
                       "split's length, so the run takes as many steps as without it", bounds=Range(0, 1, True, True))
    score_threshold: float = opt(0.5, "the teacher's detections scoring at least this are a transfer image's boxes",
                                 bounds=Range(0, 1, hi_open=True))

    def sources(self) -> list[str]:
        """The sources given, by key name."""
        return [k for k, on in (("split", self.split), ("folder", self.folder), ("synth_images", self.synth_images)) if on]

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        given = self.sources()
        if len(given) > 1:
            return [(tuple(given), f"and {', '.join(repr(g) for g in given[1:])}: give one source of unlabeled images")]
        return []


@dataclass
class DataSection:
    """The dataset: its format on disk, splits, classes and training augmentation."""

    format: str = opt("voc", "layout on disk (synth: the embedded dataset, generated on first use)", FORMATS)
    root: str = opt("", "dataset folder (VOC: the VOC2007-style folder; KITTI: the folder with image_2/ and "
                    "label_2/; COCO: the folder with annotations/ and the image folders; synth: where to "
                    "generate it, empty: under data.synth.cache_dir); relative to the working directory")
    train_split: str | None = opt("train", "training split (VOC: ImageSets/Main/NAME.txt; KITTI: ImageSets/"
                                  "NAME.txt; COCO: annotations/instances_NAME.json, images in NAME/)")
    test_split: str | None = opt("test", "evaluation split, named as train_split")
    train_ann: str | None = opt(None, "COCO: instances JSON of the training split, when not the default")
    test_ann: str | None = opt(None, "COCO: instances JSON of the evaluation split, when not the default")
    classes: list[str] | None = opt(None, "class names in label order; null: VOC's 20 classes for voc, "
                                    "the classes found in the data otherwise")
    class_map: dict[str, str] | None = opt(None, "KITTI: raw type -> class, e.g. {Van: Car}")
    limit: int | None = opt(None, "use only the first N training images", bounds=AT_LEAST_1)
    num_workers: int = opt(2, "data-loading worker processes per training process", bounds=NON_NEGATIVE)
    augment: AugmentSection = section(AugmentSection)
    synth: SynthSection = section(SynthSection)
    unlabeled: UnlabeledSection = section(UnlabeledSection)


def iou_order(fg: float, bg: float) -> list[tuple[tuple[str, ...], str]]:
    """A section's ``((keys involved), complaint)`` when its foreground IoU threshold is below its
    background one."""
    if fg < bg:
        return [(("fg_iou_thresh", "bg_iou_thresh"), f"({fg:g}) must be at least bg_iou_thresh ({bg:g}): a sample "
                 "cannot be both foreground and background")]
    return []


@dataclass
class RPNSection:
    """The region proposal network: anchors, sampling and proposal counts."""

    anchor_sizes: list[int] = opt([32, 64, 128, 256, 512], "anchor size per FPN level, in input pixels", bounds=POSITIVE)
    anchor_layout: str = opt("per_level", "per_level: one anchor size per FPN level; all_levels: every size at "
                             "every level (torchvision's MobileNetV3-FPN)", ("per_level", "all_levels"))
    aspect_ratios: list[float] = opt([0.5, 1.0, 2.0], "anchor aspect ratios (height / width)", bounds=POSITIVE)
    pre_nms_top_n_train: int = opt(2000, "proposals kept per level before NMS, training", bounds=AT_LEAST_1)
    pre_nms_top_n_test: int = opt(1000, "proposals kept per level before NMS, inference", bounds=AT_LEAST_1)
    post_nms_top_n_train: int = opt(2000, "proposals kept after NMS, training", bounds=AT_LEAST_1)
    post_nms_top_n_test: int = opt(1000, "proposals kept after NMS, inference", bounds=AT_LEAST_1)
    nms_thresh: float = opt(0.7, "NMS IoU threshold of the proposals", bounds=UNIT_OPEN_LOW)
    fg_iou_thresh: float = opt(0.7, "anchor IoU at or above which an anchor is positive", bounds=UNIT)
    bg_iou_thresh: float = opt(0.3, "anchor IoU below which an anchor is negative", bounds=UNIT)
    batch_size_per_image: int = opt(256, "anchors sampled per image for the RPN losses", bounds=AT_LEAST_1)
    positive_fraction: float = opt(0.5, "largest fraction of positives among the sampled anchors", bounds=UNIT_OPEN_LOW)

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        return iou_order(self.fg_iou_thresh, self.bg_iou_thresh)


@dataclass
class RoISection:
    """The RoI head (RCN): box head, proposal sampling and detection post-processing."""

    box_head_width: int = opt(1024, "representation size of the two-FC box head", bounds=AT_LEAST_1)
    batch_size_per_image: int = opt(512, "proposals sampled per image for the RoI losses", bounds=AT_LEAST_1)
    positive_fraction: float = opt(0.25, "largest fraction of positives among the sampled proposals", bounds=UNIT_OPEN_LOW)
    fg_iou_thresh: float = opt(0.5, "proposal IoU at or above which a proposal is foreground", bounds=UNIT)
    bg_iou_thresh: float = opt(0.5, "proposal IoU below which a proposal is background", bounds=UNIT)
    score_thresh: float = opt(0.05, "detections scoring below this are dropped", bounds=Range(0, 1, hi_open=True))
    nms_thresh: float = opt(0.5, "per-class NMS IoU threshold of the detections", bounds=UNIT_OPEN_LOW)
    detections_per_img: int = opt(100, "detections kept per image", bounds=AT_LEAST_1)

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        return iou_order(self.fg_iou_thresh, self.bg_iou_thresh)


@dataclass
class ModelSection:
    """A torchvision Faster R-CNN. ``preset`` (tiny, small, ...) fills the fields it names."""

    preset: str | None = opt(None, "a CPU preset (tiny, small; see detkd.config.presets): it sets each field "
                             "it names that is still at its default here")
    torchvision: str | None = opt(None, "a torchvision Faster R-CNN builder by name, built exactly as torchvision "
                                  "builds it (fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2, "
                                  "fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_mobilenet_v3_large_320_fpn): "
                                  "sizes, proposal counts, sampling and thresholds set here are passed to it; "
                                  "backbone, norm, FPN, anchors and box head are the builder's own")
    backbone: str = opt("resnet50", "the torchvision backbone, with an FPN: ResNet and MobileNetV3-Large built as "
                        "torchvision's detectors build them, or any torchvision classifier CNN of the families "
                        "listed, through feature extraction (e.g. regnet_y_400mf, efficientnet_b0, convnext_tiny)",
                        pattern=("|".join(BACKBONES) + "|(" + "|".join(FEATURE_FAMILIES) + r")\w*",
                                 f"one of {', '.join(BACKBONES)} or a torchvision classifier of "
                                 f"{', '.join(f + '*' for f in FEATURE_FAMILIES)}"))
    norm: str = opt("frozen_bn", "backbone norm layer: frozen BatchNorm, BatchNorm or GroupNorm", NORMS)
    fpn_channels: int = opt(256, "FPN output channels", bounds=AT_LEAST_1)
    trainable_layers: int = opt(3, "backbone stages trained, counted from the top (ResNet 0-5, MobileNetV3 "
                                "0-6); -1: all", bounds=Range(-1))
    returned_layers: list[int] | None = opt(None, "backbone stages feeding the FPN; null: torchvision's "
                                            "(ResNet [1, 2, 3, 4], MobileNetV3 [4, 5])", bounds=AT_LEAST_1)
    min_size: int = opt(800, "input shorter side in pixels (the model resizes every image)", bounds=AT_LEAST_1)
    max_size: int = opt(1333, "input longer side limit in pixels", bounds=AT_LEAST_1)
    weights: str | None = opt(None, "torchvision detector weights by name, e.g. "
                              "FasterRCNN_ResNet50_FPN_Weights.COCO_V1 (torch's cache; downloaded on first use unless "
                              "DETKD_OFFLINE=1)")
    weights_backbone: str | None = opt(None, "torchvision backbone weights by name, e.g. "
                                       "ResNet50_Weights.IMAGENET1K_V1 (torch's cache; downloaded on first use unless "
                                       "DETKD_OFFLINE=1)")
    checkpoint: str | None = opt(None, "a detkd checkpoint or plain state dict to start from")
    checkpoint_matching: bool = opt(False, "load only the tensors of model.checkpoint whose name and shape fit this "
                                    "model (another architecture's, e.g. a teacher's RPN and box head); the rest "
                                    "keeps its initialisation")
    rpn: RPNSection = section(RPNSection)
    roi: RoISection = section(RoISection)

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        sizes = self
        if self.preset is not None:  # the preset's sizes where these are still at their defaults
            sizes = resolve_model_config(self) if self.preset in PRESETS else self  # unknown: refused when built
        if sizes.min_size > sizes.max_size:
            return [(("min_size", "max_size"), f"({sizes.min_size}) must be at most max_size ({sizes.max_size}): "
                     "the resize holds an image's longer side at max_size, so its shorter side never reaches min_size")]
        return []


@dataclass
class TrainSection:
    """Optimisation, schedule, evaluation and checkpointing."""

    epochs: int = opt(12, "training epochs", bounds=AT_LEAST_1)
    batch_size: int = opt(2, "images per iteration and process (per GPU under torchrun)", bounds=AT_LEAST_1)
    optimizer: str = opt("sgd", "the optimizer", OPTIMIZERS)
    lr: float = opt(0.02, "base learning rate", bounds=POSITIVE)
    momentum: float = opt(0.9, "SGD momentum", bounds=Range(0, 1, hi_open=True))
    weight_decay: float = opt(1e-4, "weight decay", bounds=NON_NEGATIVE)
    schedule: str = opt("multistep", "learning-rate schedule after warmup", SCHEDULES)
    milestones: list[int] = opt([8, 11], "multistep: epochs after which the lr is multiplied by gamma", bounds=AT_LEAST_1)
    gamma: float = opt(0.1, "multistep: lr factor at each milestone", bounds=POSITIVE)
    warmup_iters: int = opt(500, "iterations of linear warmup", bounds=NON_NEGATIVE)
    warmup_factor: float = opt(0.001, "lr factor at the first warmup iteration", bounds=UNIT_OPEN_LOW)
    clip_grad_norm: float | None = opt(None, "clip the gradient norm to this; null: no clipping", bounds=POSITIVE)
    amp: bool = opt(False, "automatic mixed precision (CUDA only)")
    eval_every: int = opt(1, "evaluate every N epochs (0: never)", bounds=NON_NEGATIVE)
    metric: str = opt("voc.mAP", "family.key of the evaluation that picks best.pt, e.g. voc.mAP, coco.AP")
    threads: int | None = opt(None, "CPU threads of torch in the training process (null: torch's default, one a "
                              "core; with other jobs on the same cores, fewer is faster)", bounds=AT_LEAST_1)
    log_every: int = opt(20, "iterations between log lines", bounds=AT_LEAST_1)
    checkpoint_every: int = opt(0, "iterations between mid-epoch checkpoints (0: end of epoch only)", bounds=NON_NEGATIVE)


@dataclass
class Config:
    """A training or evaluation run."""

    output_dir: str = opt("runs/default", "the run directory (config.yaml, last.pt, best.pt, metrics.jsonl)")
    seed: int = opt(0, "random seed (CPU runs are repeatable)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N (auto: cuda when available)",
                      pattern=(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"))
    data: DataSection = section(DataSection)
    model: ModelSection = section(ModelSection)
    train: TrainSection = section(TrainSection)


# --- distillation (``detkd distill``): Chen et al. 2017, docs/METHOD.md sections 2-7 ----------

CLS_LOSSES = ("soft_ce", "hinton", "dist", "dkd")
CLS_MODES = ("interpolate", "add")
HINT_LOSSES = ("hint_l2", "hint_l1", "attention", "pkd", "cwd", "fgd", "mgd")
HINT_MASKS = ("none", "objects")
LEVEL_WEIGHTINGS = ("equal", "cells", "sum")
STUDENT_INITS = ("none", "teacher", "inherit")


@dataclass
class TeacherSection:
    """The frozen teacher: its config (for the architecture and resolution) and its checkpoint."""

    config: str = opt("", "the teacher's YAML config (its model section builds the teacher)")
    checkpoint: str = opt("", "the trained teacher's checkpoint (e.g. runs/.../best.pt); empty with the teacher "
                          "config's model.weights (e.g. COCO): that detector used as it is, its classes matched "
                          "to the data's by name")
    class_map: dict[str, str] | None = opt(None, "data class -> teacher class name, for a teacher of other "
                                           "classes (e.g. {Cyclist: bicycle}); the VOC names aeroplane, "
                                           "motorbike, sofa, tvmonitor, diningtable, pottedplant match COCO's")


@dataclass
class ClsTermSection:
    """Eq. 2/3: mu * hard CE + (1 - mu) * weight * soft term (``mode: interpolate``, the paper),
    or hard CE + weight * soft term (``mode: add``, Hinton), on the RoI head or the RPN."""

    enabled: bool = opt(True, "distil this head's classification")
    mode: str = opt("interpolate", "interpolate: mu * hard + (1 - mu) * weight * soft (Chen et al. eq. 2); "
                    "add: hard + weight * soft, the ground truth at full weight (Hinton; mu unused)",
                    choices=CLS_MODES)
    mu: float = opt(0.5, "interpolate: weight of the hard (ground-truth) term; the soft term gets 1 - mu", bounds=UNIT)
    weight: float = opt(1.0, "extra factor on the soft term (add: its whole weight)", bounds=NON_NEGATIVE)
    bg_weight: float = opt(1.5, "w_0, the background class weight of the soft CE (paper: 1.5)", bounds=POSITIVE)
    temperature: float = opt(1.0, "T; the soft term is multiplied by T^2 when T != 1 (paper: 1)", bounds=POSITIVE)
    loss: str = opt("soft_ce", "soft_ce (Chen et al.) | hinton (uniform weights) | dist (DIST; RoI head only) | "
                    "dkd (decoupled KD, Zhao et al. 2022, on the sampled RoIs' ground-truth classes; RoI head only; "
                    "the paper's detection setting: mode add, weight 1, temperature 1)", choices=CLS_LOSSES)
    dkd_alpha: float = opt(1.0, "dkd: alpha, the weight of TCKD (target vs non-target; paper: 1)", bounds=NON_NEGATIVE)
    dkd_beta: float = opt(0.25, "dkd: beta, the weight of NCKD (among the non-target classes; the authors' "
                          "Faster R-CNN setting: 0.25; 8 is their CIFAR-100 one)", bounds=NON_NEGATIVE)


@dataclass
class RegTermSection:
    """Eq. 4: the teacher-bounded L2 added to smooth-L1, per foreground sample."""

    enabled: bool = opt(True, "add the bounded regression term")
    nu: float = opt(0.5, "nu, its weight (paper: 0.5)", bounds=NON_NEGATIVE)
    margin: float = opt(0.0, "m: the term vanishes once the student beats the teacher by m", bounds=NON_NEGATIVE)
    bounded: bool = opt(True, "false: plain L2 to the teacher's deltas on every foreground sample "
                        "(Table 4's L2 row: the student mimics the teacher, unbounded)")


@dataclass
class HintSection:
    """Eq. 5/6: student FPN maps through 1x1-conv adaptation layers against the teacher's."""

    enabled: bool = opt(True, "add the hint term")
    gamma: float = opt(0.5, "gamma, its weight (paper: 0.5)", bounds=NON_NEGATIVE)
    loss: str = opt("hint_l2", "hint_l2 | hint_l1 (Chen et al. eq. 5/6) | attention (attention transfer, no "
                    "adaptation) | pkd (Cao et al. 2022: each channel standardised, then MSE / 2) | cwd (channel-wise "
                    "distillation, Shu et al. 2021) | fgd (focal and global distillation, Yang et al. 2022) | mgd "
                    "(masked generative distillation, Yang et al. 2022); with the papers' weights, cwd, fgd and mgd "
                    "want level_weighting: sum (cwd gamma 5, fgd and mgd gamma 1)", choices=HINT_LOSSES)
    adaptation: bool = opt(True, "1x1-conv adaptation layers (false needs equal channel counts: the ablation)")
    levels: list[str] | None = opt(None, "student FPN levels to hint (null: every paired level)")
    mask: str = opt("none", "none: every valid cell; objects: only cells near ground-truth boxes (Wang et al. "
                    "2019, from the anchors' IoU)", choices=HINT_MASKS)
    mask_psi: float = opt(0.5, "objects mask: a cell counts when an anchor there has IoU > psi x the box's best IoU", bounds=UNIT_OPEN_LOW)
    level_weighting: str = opt("equal", "equal: the mean over hinted levels (the paper); cells: each level "
                               "weighted by its share of the hinted cells; sum: the sum over levels (MMRazor's "
                               "PKD)", choices=LEVEL_WEIGHTINGS)
    level_weights: list[float] | None = opt(None, "explicit weight per hinted level, in level order (overrides "
                                            "level_weighting; the weighted sum is divided by their sum)", bounds=NON_NEGATIVE)
    cwd_tau: float = opt(1.0, "cwd: tau, the temperature of each channel's spatial softmax (the authors' "
                         "detection setting: 1, with weight 5 per FPN level; their segmentation one: 4)", bounds=POSITIVE)
    fgd_temperature: float = opt(0.5, "fgd: T of the teacher's spatial and channel attention (paper: 0.5)", bounds=POSITIVE)
    fgd_alpha: float = opt(5e-5, "fgd: alpha, the foreground feature loss weight (paper, Faster R-CNN: 5e-5)",
                           bounds=NON_NEGATIVE)
    fgd_beta: float = opt(2.5e-5, "fgd: beta, the background feature loss weight (paper, Faster R-CNN: 2.5e-5)",
                          bounds=NON_NEGATIVE)
    fgd_gamma: float = opt(5e-5, "fgd: gamma, the attention loss weight (paper, Faster R-CNN: 5e-5)", bounds=NON_NEGATIVE)
    fgd_lambda: float = opt(5e-7, "fgd: lambda, the global (GcBlock relation) loss weight (paper, Faster R-CNN: "
                            "5e-7)", bounds=NON_NEGATIVE)
    mgd_alpha: float = opt(5e-7, "mgd: alpha, the generation loss weight (the authors' Faster R-CNN setting: 5e-7; "
                           "one-stage detectors: 2e-5)", bounds=NON_NEGATIVE)
    mgd_ratio: float = opt(0.45, "mgd: lambda, the share of the student's cells masked at random (the authors' "
                           "Faster R-CNN setting: 0.45; one-stage detectors: 0.65)", bounds=Range(0, 1, hi_open=True))

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        if self.loss == "fgd" and self.mask == "objects":
            return [(("loss", "mask"), "(fgd) weights foreground and background cells by its own box masks; "
                     "mask: objects does not apply to it (use mask: none)")]
        return []


@dataclass
class DistillSection:
    """Each term on or off with its weights; an ablation is a config."""

    rcn_cls: ClsTermSection = section(ClsTermSection, "RoI-head classification (eq. 2, 3)")
    rpn_cls: ClsTermSection = section(ClsTermSection, "RPN objectness, as a 2-way distribution")
    rcn_reg: RegTermSection = section(RegTermSection, "RoI-head bounded regression (eq. 4)")
    rpn_reg: RegTermSection = section(RegTermSection, "RPN bounded regression (eq. 4)")
    hint: HintSection = section(HintSection)
    diagnose_every: int = opt(0, "log each term's share of the gradient norm per student module every N "
                              "iterations (0: off; costs one backward per term)", bounds=NON_NEGATIVE)


@dataclass
class StudentSection:
    """Where the distilled student starts."""

    init: str = opt("none", "none: model.* as configured (from scratch, or model.checkpoint/weights); teacher: "
                    "the teacher's weights (same architecture, e.g. a half-resolution student; its fair "
                    "baseline is the same start without distillation); inherit: the teacher's tensors whose name "
                    "and shape fit the student (with the teacher's FPN and box-head widths: its FPN output convs, "
                    "RPN head and box head), the rest from scratch; its baseline inherits them too",
                    choices=STUDENT_INITS)


@dataclass
class DistillConfig(Config):
    """Every key of a training config (``detkd train``); a distillation config (``detkd distill``,
    ``detkd ablate``, the ``distill_*.yaml`` of ``detkd demo``) adds the ``teacher`` and ``distill``
    sections, the terms of Chen et al. (NeurIPS 2017) and their alternatives."""

    teacher: TeacherSection = section(TeacherSection)
    student: StudentSection = section(StudentSection)
    distill: DistillSection = section(DistillSection)


# the sections a distillation config adds to a training config
DISTILL_SECTIONS = tuple(f.name for f in dataclasses.fields(DistillConfig) if f.name not in Config.__dataclass_fields__)
