"""The data a config's ``data`` section describes: sources, classes, splits and augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from detkd.config import AugmentSection, DataSection, SynthSection
from detkd.data.from_config import (
    DataSource,
    build_augmentation,
    build_eval_dataset,
    build_train_dataset,
    data_classes,
    declared_classes,
    eval_classes,
    load_split,
    resolve_source,
)
from detkd.data.records import ImageRecord
from detkd.data.synth import SYNTH_CLASSES
from detkd.data.transforms import EpochSeededAugment
from detkd.data.voc import VOC_CLASSES
from detkd.errors import DetkdError

OFF = AugmentSection(hflip=0.0, vflip=0.0, scale_jitter=None, brightness=0.0, contrast=0.0, hue=0.0, saturation=0.0)


def test_declared_classes_come_from_the_section_then_the_caller_then_the_format() -> None:
    assert declared_classes(DataSection(format="kitti", classes=["Car"]), ["Van"]) == ("Car",)
    assert declared_classes(DataSection(format="kitti"), ["Van"]) == ("Van",)
    assert declared_classes(DataSection(format="voc")) == tuple(VOC_CLASSES)
    assert declared_classes(DataSection(format="synth")) == tuple(SYNTH_CLASSES)
    assert declared_classes(DataSection(format="kitti")) is None and declared_classes(DataSection(format="coco")) is None


def test_resolve_source_and_its_errors(synth_root: Path, tmp_path: Path) -> None:
    voc = str(synth_root / "voc")
    assert resolve_source(DataSection(format="voc", root=voc)) == DataSource("voc", voc, tuple(VOC_CLASSES), None)
    synth = SynthSection(images=15, seed=0)  # synth_root's: found in place, not generated again
    assert resolve_source(DataSection(format="synth", root=str(synth_root), synth=synth)) == DataSource(
        "voc", str(synth_root / "voc"), tuple(SYNTH_CLASSES), None)
    for data, message in ((DataSection(format="yolo"), "unknown format 'yolo'"),
                          (DataSection(format="kitti"), "no dataset folder given"),
                          (DataSection(format="kitti", root=str(tmp_path / "none")), "no such folder")):
        with pytest.raises(DetkdError, match=message):
            resolve_source(data)


def test_load_split_limits_the_training_split_only(synth_root: Path) -> None:
    data = DataSection(format="voc", root=str(synth_root / "voc"), classes=list(SYNTH_CLASSES), limit=5)
    assert len(load_split(data, train=True).records) == 5
    assert len(load_split(data, train=False).records) == 3
    assert len(load_split(data, train=True, split="first8").records) == 5
    with pytest.raises(DetkdError, match="data.limit: must be a positive number"):
        load_split(dataclasses.replace(data, limit=0), train=True)


def test_datasets_augment_for_training_only(synth_root: Path) -> None:
    data = DataSection(format="voc", root=str(synth_root / "voc"), classes=list(SYNTH_CLASSES))
    assert isinstance(build_train_dataset(data).augment, EpochSeededAugment)
    assert build_train_dataset(dataclasses.replace(data, augment=OFF)).augment is None
    test = build_eval_dataset(data, split="first8")
    assert test.augment is None and len(test) == 8 and tuple(test.classes) == tuple(SYNTH_CLASSES)


def test_augmentation_draws_depend_on_seed_epoch_and_image() -> None:
    assert build_augmentation(OFF, 0) is None
    section = dataclasses.replace(OFF, hflip=0.5, scale_jitter=[0.5, 1.5])
    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    record = ImageRecord("a", "a.png", 48, 32, boxes=np.array([[4, 4, 20, 20]], np.float32),
                         labels=np.array([1], np.int64), difficult=np.zeros(1, bool))

    def boxes(seed: int, epoch: int, image_id: str = "a") -> list:
        augment = build_augmentation(section, seed)
        augment.epoch = epoch
        return [augment(image, dataclasses.replace(record, image_id=image_id))[1].boxes.tolist() for _ in range(2)]

    first = boxes(0, 0)
    assert first[0] == first[1] == boxes(0, 0)[0]  # the same draws every time
    draws = {str(boxes(s, e, i)[0]) for s in (0, 1) for e in (0, 1) for i in ("a", "b")}
    assert len(draws) > 1


def test_data_classes_read_the_training_split_else_the_test_split(kitti_root: Path, synth_root: Path) -> None:
    found = data_classes(DataSection(format="kitti", root=str(kitti_root), train_split=None))
    assert found == tuple(sorted(found)) and "Car" in found
    fallback = DataSection(format="kitti", root=str(kitti_root), train_split="missing", test_split=None)
    assert data_classes(fallback) == found
    assert data_classes(DataSection(format="voc", root=str(synth_root / "voc"))) == tuple(VOC_CLASSES)


def test_eval_classes_keep_the_training_order_except_for_coco() -> None:
    assert eval_classes(DataSection(format="kitti"), ["b", "a"]) == ("b", "a")
    assert eval_classes(DataSection(format="coco"), ["b", "a"]) is None
