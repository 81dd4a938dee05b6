"""Each choice list of the config schema names what its registry (or dispatcher) builds, no more, no less.

``detkd.config`` is the lowest floor: it cannot import the backbones, the losses or the dataset
readers to list their names, so its choice lists are second copies of the registries. These
tests tie each copy to its registry both ways: a backbone, a loss or a format registered in one
place and missing in the other fails here, not in a user's run.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from detkd.cli import common as cli_common
from detkd.config import (
    BACKBONES, CLS_LOSSES, FEATURE_FAMILIES, FORMATS, HINT_LOSSES, NORMS, OPTIMIZERS, SCHEDULES, ClsTermSection,
    DataSection, HintSection, ModelSection, SynthSection, TrainSection,
)
from detkd.config.fields import field_meta
from detkd.data.build import READERS
from detkd.data.synth import SYNTH_PROFILES
from detkd.distill.build import ROI_HEAD_ONLY
from detkd.distill.losses import DISTILL_LOSSES
from detkd.engine.schedule import build_optimizer, lr_factor
from detkd.evaluation.build import FAMILIES
from detkd.models.backbones import BACKBONES as BACKBONE_REGISTRY
from detkd.models.backbone_parts import norm_layer
from detkd.models.feature_backbone import feature_backbones

GENERATED = {"synth"}  # a format generated into a VOC folder, read by the voc reader
CLS_KINDS = {"logits", "labelled_logits"}
HINT_KINDS = {"feature", "feature_boxes", "feature_generative"}
FIXED_LOSSES = {"objectness_soft_ce", "bounded_l2", "teacher_l2"}  # the RPN objectness and regression terms: no choice


def choices(cls: type, name: str) -> tuple[str, ...]:
    return field_meta(cls, name)["choices"]


def losses_of(kinds: set[str]) -> set[str]:
    return {n for n in DISTILL_LOSSES.names() if DISTILL_LOSSES.get(n).kind in kinds}


@pytest.mark.parametrize("cls, name, names", [
    (DataSection, "format", FORMATS), (ModelSection, "norm", NORMS), (TrainSection, "optimizer", OPTIMIZERS),
    (TrainSection, "schedule", SCHEDULES), (ClsTermSection, "loss", CLS_LOSSES), (HintSection, "loss", HINT_LOSSES),
])
def test_the_fields_offer_the_named_lists(cls: type, name: str, names: tuple[str, ...]) -> None:
    assert choices(cls, name) == names and len(set(names)) == len(names)


def test_formats_are_the_dataset_readers_and_synth() -> None:
    assert set(FORMATS) == set(READERS.names()) | GENERATED
    assert set(cli_common.DISK_FORMATS) == set(READERS.names())  # `detkd data --format`: files on disk only
    assert set(FAMILIES) == set(READERS.names())  # the metric families of each format read from disk


def test_backbones_are_the_registry_s_hand_built_ones() -> None:
    hand_built = {n for n in BACKBONE_REGISTRY.names() if not n.startswith(FEATURE_FAMILIES)}
    assert hand_built == set(BACKBONES)
    assert set(BACKBONE_REGISTRY.names()) == set(BACKBONES) | set(feature_backbones())


def test_every_registered_backbone_passes_the_schema_and_every_family_names_one() -> None:
    pattern = field_meta(ModelSection, "backbone")["pattern"][0]
    assert [n for n in BACKBONE_REGISTRY.names() if not re.fullmatch(pattern, n)] == []
    assert [f for f in FEATURE_FAMILIES if not any(n.startswith(f) for n in feature_backbones())] == []


def test_cls_losses_are_the_registry_s_logit_losses() -> None:
    assert set(CLS_LOSSES) == losses_of(CLS_KINDS)
    assert set(ROI_HEAD_ONLY) <= set(CLS_LOSSES)


def test_hint_losses_are_the_registry_s_feature_losses() -> None:
    assert set(HINT_LOSSES) == losses_of(HINT_KINDS)


def test_every_registered_loss_is_a_choice_or_a_fixed_term() -> None:
    assert set(DISTILL_LOSSES.names()) == set(CLS_LOSSES) | set(HINT_LOSSES) | FIXED_LOSSES


def test_synth_profiles_are_the_generator_s() -> None:
    assert set(choices(SynthSection, "profile")) == set(SYNTH_PROFILES)


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_is_built(norm: str) -> None:
    assert callable(norm_layer(norm, "resnet18"))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_is_built(optimizer: str) -> None:
    assert isinstance(build_optimizer(nn.Linear(2, 2), TrainSection(optimizer=optimizer)), torch.optim.Optimizer)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_is_built(schedule: str) -> None:
    assert lr_factor(TrainSection(schedule=schedule), 10)(0) > 0
