"""Building the distillation task from a :class:`~detkd.config.DistillConfig`."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

from torchvision.models.detection import FasterRCNN

from detkd.config import ClsTermSection, Config, DistillConfig, load_any_config, saved_run_config
from detkd.config.files import find_packaged
from detkd.data.from_config import data_classes as data_classes_of
from detkd.data.from_config import resolve_source
from detkd.distill.pairing import feature_layout, pair_levels, rpn_pairs
from detkd.distill.task import (
    DistillModule,
    DistillTask,
    build_adapters,
    build_blocks,
    hint_level_weights,
    hinted_pairs,
    loss_weights,
)
from detkd.distill.teacher import check_teacher_compatible, freeze_teacher
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.models.class_map import check_class_map, pretrained_for_classes
from detkd.models.weights import load_state_checked
from detkd.utils.checkpoint import read_checkpoint

log = logging.getLogger("detkd")


def build_distill_task(cfg: DistillConfig, num_classes: int) -> DistillTask:
    """The student of ``cfg.model``, its adapters, the hint loss's learned blocks and the frozen
    teacher of ``cfg.teacher``.

    The student is built first, from the random state the trainer seeded, exactly as ``detkd
    train`` builds the same model: at one seed the distilled student and its baseline start from
    bit-identical weights (a paired comparison; the teacher is read from disk afterwards).
    """
    cfg = resolve_student_init(cfg)
    student = build_model(cfg.model, num_classes)
    teacher = load_teacher(cfg, num_classes)
    (strides_s, channels_s), (strides_t, channels_t) = feature_layout(student.backbone), feature_layout(teacher.backbone)
    scale = student.transform.min_size[0] / teacher.transform.min_size[0]  # the built models' own sizes
    pairing = pair_levels(strides_s, strides_t, scale)
    log.info("distillation level pairing: %s", pairing.describe())
    terms = cfg.distill
    check_rpn_loss(terms.rpn_cls)
    matched = rpn_pairs(pairing, student.rpn.anchor_generator, teacher.rpn.anchor_generator)
    if (terms.rpn_cls.enabled or terms.rpn_reg.enabled) and not matched:
        log.warning("RPN distillation is off for this pair: no paired level has the same anchors (aspect ratios, "
                    "and sizes in teacher pixels) in student and teacher; align model.rpn.anchor_sizes / "
                    "aspect_ratios to compare the RPNs")
        terms = dataclasses.replace(terms, rpn_cls=dataclasses.replace(terms.rpn_cls, enabled=False),
                                    rpn_reg=dataclasses.replace(terms.rpn_reg, enabled=False))
    elif terms.rpn_cls.enabled or terms.rpn_reg.enabled:
        log.info("RPN distillation on the level pairs with matching anchors: %s", ", ".join(f"{a}->{b}" for a, b in matched))
    adapters = build_adapters(pairing, channels_s, channels_t, terms)
    if terms.hint.enabled:
        hint_level_weights(terms.hint, [1] * len(hinted_pairs(pairing, terms)))  # checks level_weights
    blocks = build_blocks(pairing, channels_t, terms)
    return DistillTask(DistillModule(student, adapters, blocks), teacher, pairing, terms, loss_weights(terms), matched,
                       diagnose_every=cfg.distill.diagnose_every, pseudo_threshold=cfg.data.unlabeled.score_threshold)


ROI_HEAD_ONLY = {"dist": "relates classes across RoIs", "dkd": "decouples the target class from the other classes"}


def check_rpn_loss(rpn_cls: ClsTermSection) -> None:
    """The RPN's soft term must be one of the losses that apply to its 2-way objectness."""
    if rpn_cls.enabled and rpn_cls.loss in ROI_HEAD_ONLY:
        raise DetkdError(f"distill.rpn_cls.loss: {rpn_cls.loss} {ROI_HEAD_ONLY[rpn_cls.loss]} and applies to the RoI "
                         f"head only (distill.rcn_cls.loss={rpn_cls.loss}); use soft_ce or hinton for the RPN")


def resolve_student_init(cfg: DistillConfig) -> DistillConfig:
    """``student.init: teacher`` (or ``inherit``) as what it means: ``model.checkpoint`` =
    ``teacher.checkpoint``, whole (or ``model.checkpoint_matching``: the tensors that fit), so
    the plain baseline of the same config, which keeps ``model``, starts there too."""
    init = cfg.student.init
    if init not in ("teacher", "inherit"):
        return cfg
    given = cfg.model.checkpoint
    if given and os.path.abspath(os.path.expanduser(given)) != os.path.abspath(os.path.expanduser(cfg.teacher.checkpoint)):
        raise DetkdError(f"student.init: {init}, but model.checkpoint is {given!r}: give one starting point")
    model = dataclasses.replace(cfg.model, checkpoint=find_packaged(cfg.teacher.checkpoint), weights=None,
                                weights_backbone=None, checkpoint_matching=init == "inherit")
    return dataclasses.replace(cfg, model=model, student=dataclasses.replace(cfg.student, init="none"))


def load_teacher(cfg: DistillConfig, num_classes: int) -> FasterRCNN:
    """The teacher of ``teacher.config``, with the weights of ``teacher.checkpoint``, frozen.

    A distilled student can teach: ``teacher.config`` may be a distillation config and the
    checkpoint a ``detkd distill`` run's, whose model section (the student's) builds the teacher."""
    path = cfg.teacher.checkpoint
    unset = DetkdError("teacher.config and teacher.checkpoint must both be set (the trained teacher's config and "
                       "best.pt), or teacher.config alone when its model.weights is a pretrained detector")
    if not cfg.teacher.config:
        raise unset
    teacher_cfg = load_any_config(cfg.teacher.config)
    if not path and teacher_cfg.model.weights:
        return freeze_teacher(pretrained_teacher(cfg, teacher_cfg))
    if not path:
        raise unset
    path = find_packaged(path)  # detkd/assets/demo_teacher.pt from any folder
    if not os.path.isfile(path):
        raise DetkdError(f"{path}: teacher checkpoint not found")
    run = read_checkpoint(path)
    saved_model = saved_teacher_config(run.config, path).model if run.config is not None else teacher_cfg.model
    saved_classes = run.classes
    student_classes = resolve_source(cfg.data).classes or saved_classes or []
    check_checkpoint_class_map(cfg.teacher.class_map, student_classes, saved_classes or student_classes)
    if saved_classes is not None:
        check_teacher_compatible(path, saved_classes, student_classes, saved_model, teacher_cfg.model)
    if saved_classes is not None and len(saved_classes) + 1 != num_classes:
        raise DetkdError(f"{path}: the teacher has {len(saved_classes)} classes, the student's data {num_classes - 1}")
    teacher = build_model(teacher_cfg.model, num_classes)
    load_state_checked(teacher, run.weights, path, "checkpoint")
    return freeze_teacher(teacher)


def saved_teacher_config(saved: dict, path: str) -> Config:
    """A checkpoint's config: a training run's, or a distillation run's (a distilled student)."""
    cfg = saved_run_config(saved, path)
    if isinstance(cfg, DistillConfig):
        log.info("teacher.checkpoint: %s is a distilled student (a detkd distill run's); it is the teacher here", path)
    return cfg


def check_checkpoint_class_map(class_map: dict[str, str] | None, student_classes: Sequence[str],
                               teacher_classes: Sequence[str]) -> None:
    """``teacher.class_map`` with a teacher checkpoint: its names must be known, and the teacher
    knows the student's classes by their own names (it is trained on them), so an entry that
    renames a class would be ignored: refused."""
    check_class_map(class_map, student_classes, teacher_classes)
    renamed = {k: v for k, v in (class_map or {}).items() if k != v}
    if renamed:
        raise DetkdError(f"teacher.class_map: {renamed} renames classes, but a teacher checkpoint is trained on the "
                         "student's classes (the same names, in the same order); the map applies to a pretrained "
                         "teacher (teacher.checkpoint empty, the teacher config's model.weights)")


def pretrained_teacher(cfg: DistillConfig, teacher_cfg: Config) -> FasterRCNN:
    """The teacher config's pretrained detector (``model.weights``, e.g. COCO's 91 labels) used as
    it is: its classes matched to the student's data by name (``teacher.class_map``, the VOC
    aliases) and its predictor reduced to them (:mod:`detkd.models.class_map`)."""
    return pretrained_for_classes(teacher_cfg.model, data_classes_of(cfg.data), cfg.teacher.class_map)
