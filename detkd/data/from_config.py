"""The data a config's ``data`` section describes: where each split is read from, its classes, its
datasets (the training one with ``data.augment``, the evaluation one never augmented).

``synth`` is resolved here to the VOC folder of the embedded dataset (generated on first use);
every other format is read from ``data.root``. Samplers and loaders are the engine's
(:mod:`detkd.engine.data`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from detkd.config import FORMATS, AugmentSection, DataSection
from detkd.data.build import load_index
from detkd.data.dataset import DatasetIndex, DetectionDataset
from detkd.data.synth import SYNTH_CLASSES, ensure_synth
from detkd.data.transforms import AugmentConfig, EpochSeededAugment, build_augment
from detkd.data.voc import VOC_CLASSES
from detkd.errors import DetkdError

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {"voc": tuple(VOC_CLASSES), "synth": tuple(SYNTH_CLASSES)}


@dataclass(frozen=True)
class DataSource:
    """Where a split is read from, once ``synth`` is resolved to its generated VOC folder."""

    format: str  # voc | kitti | coco
    root: str
    classes: tuple[str, ...] | None
    class_map: dict[str, str] | None


def declared_classes(data: DataSection, classes: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The label order known without reading the data: ``data.classes``, else ``classes`` (e.g. a
    checkpoint's), else the format's default (VOC's 20, the embedded dataset's 9); None otherwise."""
    if data.classes:
        return tuple(data.classes)
    if classes:
        return tuple(classes)
    return DEFAULT_CLASSES.get(data.format)


def resolve_source(data: DataSection, classes: Sequence[str] | None = None) -> DataSource:
    """The reader's arguments for ``data``; ``classes`` (e.g. a checkpoint's) fills in ``data.classes``."""
    if data.format not in FORMATS:
        raise DetkdError(f"data.format: unknown format {data.format!r} (expected one of {', '.join(FORMATS)})")
    names = declared_classes(data, classes)
    if data.format == "synth":
        return DataSource("voc", os.path.join(synth_folder(data), "voc"), names, None)
    if not data.root:
        raise DetkdError("data.root: no dataset folder given (set data.root=PATH)")
    root = os.path.expanduser(data.root)
    if not os.path.isdir(root):
        raise DetkdError(f"data.root: {root}: no such folder")
    return DataSource(data.format, root, names, data.class_map)


def synth_folder(data: DataSection) -> str:
    """The embedded dataset of ``data.synth`` (in ``data.root``, else under ``data.synth.cache_dir``),
    generated there first unless it is already in place."""
    synth = data.synth
    kind = "" if synth.profile == "standard" else f"{synth.profile}-"
    folder = data.root or os.path.join(
        os.path.expanduser(synth.cache_dir), f"synth-{kind}{synth.images}-seed{synth.seed}"
    )
    return ensure_synth(os.path.expanduser(folder), synth.images, synth.seed, synth.profile)


def load_split(data: DataSection, train: bool, classes: Sequence[str] | None = None, split: str | None = None) -> DatasetIndex:
    """The index of the training split (first ``data.limit`` images) or of the test split."""
    source = resolve_source(data, classes)
    if split is None:
        split = data.train_split if train else data.test_split
    ann = data.train_ann if train else data.test_ann
    index = load_index(source.format, source.root, split=split, ann=ann, classes=source.classes,
                       class_map=source.class_map)
    if train and data.limit is not None:
        if data.limit <= 0:
            raise DetkdError(f"data.limit: must be a positive number of images, got {data.limit}")
        index.records = index.records[: data.limit]
    if not index.records:
        raise DetkdError(f"{source.root}: split {split!r} holds no images")
    return index


def build_train_dataset(data: DataSection, seed: int = 0) -> DetectionDataset:
    """The training split, with ``data.augment`` (its draws seeded by ``seed``, epoch and image)."""
    return DetectionDataset(load_split(data, train=True), augment=build_augmentation(data.augment, seed))


def build_eval_dataset(data: DataSection, classes: Sequence[str] | None = None, split: str | None = None) -> DetectionDataset:
    """The test split (or ``split``), never augmented; ``classes`` keeps the training label order."""
    return DetectionDataset(load_split(data, train=False, classes=classes, split=split), augment=None)


def build_augmentation(section: AugmentSection, seed: int) -> EpochSeededAugment | None:
    """The training augmentation of ``data.augment``; None when every option is off."""
    if not (section.hflip or section.vflip or section.scale_jitter or section.brightness or section.contrast
            or section.hue or section.saturation):
        return None
    return EpochSeededAugment(build_augment(AugmentConfig.from_section(section)), seed)


def data_classes(data: DataSection) -> tuple[str, ...]:
    """The label order a model trained on ``data`` has: ``data.classes``, the format's default
    (VOC's 20, the embedded dataset's 9), else the classes the reader finds in the training split
    (the evaluation split's when there is no training split to read)."""
    source = resolve_source(data)
    if source.classes is not None:
        return tuple(source.classes)
    try:
        return tuple(load_split(data, train=True).classes)
    except DetkdError:
        return tuple(load_split(data, train=False).classes)


def eval_classes(data: DataSection, train_classes: Sequence[str]) -> tuple[str, ...] | None:
    """The label order to read the test split with: the training split's, except for COCO,
    whose categories come from its annotation file."""
    return None if data.format == "coco" else tuple(train_classes)
