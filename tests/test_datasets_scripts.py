"""The preparation scripts of datasets/: their output is read back by detkd's readers."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from detkd.data.kitti import read_kitti
from detkd.data.voc import read_voc

DATASETS = Path(__file__).resolve().parents[1] / "datasets"

VOC_XML = """<annotation><filename>{stem}.jpg</filename>
<size><width>20</width><height>10</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult>
<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>8</ymax></bndbox></object></annotation>"""


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DATASETS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_voc_year(devkit: Path, year: str, trainval: list[str], test: list[str]) -> None:
    base = devkit / year
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "Annotations").mkdir()
    (base / "JPEGImages").mkdir()
    for stem in trainval + test:
        (base / "Annotations" / f"{stem}.xml").write_text(VOC_XML.format(stem=stem))
        cv2.imwrite(str(base / "JPEGImages" / f"{stem}.jpg"), np.zeros((10, 20, 3), np.uint8))  # the XML's size
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("".join(s + "\n" for s in trainval))
    (base / "ImageSets" / "Main" / "test.txt").write_text("".join(s + "\n" for s in test))


def test_voc0712_joins_both_years(tmp_path: Path) -> None:
    fake_voc_year(tmp_path, "VOC2007", ["000001", "000002"], ["000003"])
    fake_voc_year(tmp_path, "VOC2012", ["2008_000001"], [])
    prepare = script("prepare_voc0712")
    assert prepare.main([str(tmp_path)]) == 0
    trainval = read_voc(str(tmp_path / "VOC0712"), split="trainval")
    test = read_voc(str(tmp_path / "VOC0712"), split="test")
    assert [r.image_id for r in trainval.records] == ["000001", "000002", "2008_000001"]
    assert [r.image_id for r in test.records] == ["000003"]
    with pytest.raises(SystemExit, match="--force"):
        prepare.main([str(tmp_path)])
    assert prepare.main([str(tmp_path), "--force"]) == 0


def test_kitti_split_is_seeded_disjoint_and_covering(tmp_path: Path, kitti_root: Path) -> None:
    root = tmp_path / "kitti"
    shutil.copytree(kitti_root / "label_2", root / "label_2")
    (root / "image_2").symlink_to(kitti_root / "image_2")
    prepare = script("prepare_kitti_split")
    assert prepare.main([str(root), "--val-fraction", "0.2", "--seed", "1"]) == 0
    train = read_kitti(str(root), split="train")
    val = read_kitti(str(root), split="val")
    train_ids = {r.image_id for r in train.records}
    val_ids = {r.image_id for r in val.records}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 75 and len(val_ids) == 15
    first = (root / "ImageSets" / "val.txt").read_text()
    with pytest.raises(SystemExit, match="--force"):
        prepare.main([str(root), "--val-fraction", "0.2", "--seed", "2"])
    assert prepare.main([str(root), "--val-fraction", "0.2", "--seed", "1", "--force"]) == 0
    assert (root / "ImageSets" / "val.txt").read_text() == first
