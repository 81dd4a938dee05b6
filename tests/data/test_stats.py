"""dataset_stats / format_stats, and load_index / build_dataset dispatching to the readers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detkd.data import (
    READERS,
    AugmentConfig,
    DataWarning,
    DatasetIndex,
    ImageRecord,
    LoadReport,
    build_dataset,
    concat_indexes,
    dataset_stats,
    format_stats,
    load_index,
)
from detkd.errors import DetkdError


def small_index() -> DatasetIndex:
    records = [
        ImageRecord("a", "a.jpg", 10, 10, boxes=np.array([[0, 0, 5, 5], [1, 1, 4, 4], [2, 2, 3, 3]], np.float32),
                    labels=np.array([1, 2, 2]), difficult=np.array([False, True, False]),
                    ignore_boxes=np.array([[0, 0, 1, 1]], np.float32), ignore_labels=np.array([0])),
        ImageRecord("b", "b.jpg", 10, 10),
    ]  # fmt: skip
    report = LoadReport(dropped=["a.xml (object 4)"], clipped=["a.xml (object 5)", "b.xml (object 1)"],
                        skipped_classes=Counter({"Misc": 2}), outside=["a.xml (object 6)"],
                        size_mismatch=["b.xml: annotated 640x480, file 480x640"])  # fmt: skip
    return DatasetIndex("voc", "/data", "train", ("cat", "dog", "cow"), records, report)


def test_counts() -> None:
    stats = dataset_stats(small_index())
    assert stats == {
        "format": "voc", "split": "train", "images": 2, "empty_images": 1, "boxes": 3, "ignored": 1,
        "difficult": 1, "dropped": 1, "dropped_outside": 1, "clipped": 2, "size_mismatch": 1,
        "per_class": {"cat": 1, "dog": 2, "cow": 0},
        "skipped_classes": {"Misc": 2},
    }  # fmt: skip
    json.dumps(stats)  # JSON-ready for `detkd data stats --json`


def test_format_stats_for_the_terminal() -> None:
    text = format_stats(dataset_stats(small_index()))
    assert "images" in text and "dog" in text and "66.7%" in text and "Misc: 2" in text
    assert "dropped" in text and "clipped" in text


def test_bccd_stats(bccd_root: Path) -> None:
    with pytest.warns(DataWarning):
        stats = dataset_stats(load_index("voc", str(bccd_root)))
    assert stats["images"] == 364 and stats["dropped"] == 2 and stats["clipped"] == 0
    assert sum(stats["per_class"].values()) == stats["boxes"] == 4886


def test_kitti_and_coco_stats(kitti_root: Path, coco_root: Path) -> None:
    kitti = dataset_stats(load_index("kitti", str(kitti_root)))
    assert (kitti["images"], kitti["boxes"], kitti["ignored"]) == (75, 311, 188)
    coco = dataset_stats(load_index("coco", str(coco_root), split="val2017"))
    assert (coco["images"], coco["boxes"], coco["ignored"]) == (128, 929, 10)
    raw = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    present = {a["category_id"] for a in raw["annotations"] if not a["iscrowd"]}
    assert sum(1 for n in coco["per_class"].values() if n) == len(present) and len(coco["per_class"]) == 80


def test_load_index_refuses_options_a_format_does_not_take(tmp_path: Path) -> None:
    assert READERS.names() == ["coco", "kitti", "voc"]
    with pytest.raises(DetkdError, match="ann does not apply to format 'voc'"):
        load_index("voc", str(tmp_path), ann="x.json")
    with pytest.raises(DetkdError, match="class_map does not apply to format 'coco'"):
        load_index("coco", str(tmp_path), split="val", class_map={"Van": "Car"})
    with pytest.raises(DetkdError, match="did you mean 'kitti'"):
        load_index("kiti", str(tmp_path))


def test_build_dataset_and_concat(kitti_root: Path) -> None:
    dataset = build_dataset("kitti", str(kitti_root), augment=AugmentConfig(hflip=1.0))
    assert len(dataset) == 75 and dataset.augment is not None
    image, target = dataset[0]
    assert image.shape[0] == 3 and target["boxes"].shape[1] == 4
    everything = {"Van": "Car", "Person_sitting": "Pedestrian", "Truck": "Car", "Tram": "Car", "Misc": "Car", "Cyclist": "Car"}
    a = load_index("kitti", str(kitti_root), classes=["Car", "Pedestrian"], class_map=everything)
    a.records = a.records[:40]
    b = load_index("kitti", str(kitti_root))
    b.records = b.records[40:]
    both = concat_indexes([a, b])
    assert both.classes[:2] == ("Car", "Pedestrian") and set(both.classes) == set(b.classes)
    names = [both.classes[k - 1] for r in both.records[40:] for k in r.labels]
    assert names == [b.classes[k - 1] for r in b.records for k in r.labels]
    with pytest.raises(DetkdError, match="in two of the datasets"):
        concat_indexes([b, b])
