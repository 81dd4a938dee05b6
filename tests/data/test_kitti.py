"""The KITTI reader on kitti_tiny (counts checked by counting label lines) and on broken files."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkd.data import DataWarning, read_kitti
from detkd.errors import DataError

LINE = "{} 0.50 2 -1.5 {} {} {} {} 1.5 1.6 3.9 1.0 1.7 20.0 -1.6"


def raw_lines(root: Path) -> list[list[str]]:
    return [line.split() for f in sorted((root / "label_2").glob("*.txt")) for line in f.read_text().splitlines() if line.strip()]


def quiet_kitti(*args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return read_kitti(*args, **kwargs)


@pytest.fixture(scope="module")
def kitti(kitti_root: Path):
    return read_kitti(str(kitti_root))


def test_kitti_tiny_counts_match_the_label_lines(kitti_root: Path, kitti) -> None:
    types = Counter(fields[0] for fields in raw_lines(kitti_root))
    assert len(kitti.records) == len(list((kitti_root / "label_2").glob("*.txt"))) == 75
    assert kitti.classes == tuple(sorted(set(types) - {"DontCare"}))
    got = Counter(kitti.classes[k - 1] for r in kitti.records for k in r.labels)
    assert got == types - Counter({"DontCare": types["DontCare"]})
    assert sum(got.values()) == 311
    ignore = [r.ignore_labels for r in kitti.records]
    assert sum(len(x) for x in ignore) == types["DontCare"] and all((x == 0).all() for x in ignore)
    assert not kitti.report.dropped and not kitti.report.skipped_classes


def test_attributes_stay_aligned_with_the_boxes(kitti_root: Path, kitti) -> None:
    rec = next(r for r in kitti.records if r.image_id == "000037")
    rows = [f for f in (line.split() for line in (kitti_root / "label_2" / "000037.txt").read_text().splitlines()) if f[0] != "DontCare"]
    np.testing.assert_allclose(rec.boxes, [[float(v) for v in f[4:8]] for f in rows], rtol=1e-6)
    np.testing.assert_allclose(rec.extras["truncated"], [float(f[1]) for f in rows])
    assert rec.extras["occluded"].tolist() == [int(f[2]) for f in rows]
    assert rec.extras["truncated"].dtype == np.float32 and rec.extras["occluded"].dtype == np.int64
    assert [kitti.classes[k - 1] for k in rec.labels] == [f[0] for f in rows]
    assert rec.file_name.endswith("image_2/000037.jpeg")  # kitti_tiny's images are .jpeg


def test_image_size_comes_from_each_image(kitti) -> None:
    sizes = {(r.width, r.height) for r in kitti.records}
    assert (1242, 375) in sizes and len(sizes) > 1  # kitti_tiny mixes a few sizes


def test_neighbour_classes_and_class_map(kitti_root: Path) -> None:
    types = Counter(fields[0] for fields in raw_lines(kitti_root))
    with pytest.warns(DataWarning, match="left out"):
        index = read_kitti(str(kitti_root), classes=["Car", "Pedestrian", "Cyclist"])
    neighbours = np.concatenate([r.extras["neighbor_labels"] for r in index.records])
    assert Counter(neighbours.tolist()) == {1: types["Van"], 2: types["Person_sitting"]}
    assert all(r.extras["neighbor_boxes"].shape == (len(r.extras["neighbor_labels"]), 4) for r in index.records)
    assert index.report.skipped_classes == {t: types[t] for t in ("Van", "Person_sitting", "Truck", "Tram", "Misc")}
    with pytest.warns(DataWarning):
        mapped = read_kitti(str(kitti_root), classes=["Car", "Pedestrian"], class_map={"Van": "Car"})
    labels = Counter(int(k) for r in mapped.records for k in r.labels)
    assert labels == {1: types["Car"] + types["Van"], 2: types["Pedestrian"]}
    neighbours = np.concatenate([r.extras["neighbor_labels"] for r in mapped.records])
    assert neighbours.tolist() == [2] * types["Person_sitting"]  # Van now a Car: no Van neighbours


# --- small KITTI folders written into tmp_path -------------------------------------------------


def make_kitti(root: Path, labels: dict[str, list[str]], image_ext: str = ".png") -> Path:
    (root / "label_2").mkdir(parents=True)
    (root / "image_2").mkdir()
    for stem, lines in labels.items():
        (root / "label_2" / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        if image_ext:
            cv2.imwrite(str(root / "image_2" / f"{stem}{image_ext}"), np.zeros((40, 100, 3), np.uint8))
    return root


def test_splits_from_file_lists(tmp_path: Path) -> None:
    root = make_kitti(tmp_path / "k", {s: [LINE.format("Car", 1, 2, 30, 20)] for s in ("000000", "000001", "000002")})
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("000000\n000002\n")
    (root / "val.txt").write_text("000001\n")
    (tmp_path / "mine.txt").write_text("000002.png\n")
    assert [r.image_id for r in read_kitti(str(root), split="train").records] == ["000000", "000002"]
    assert [r.image_id for r in read_kitti(str(root), split="val").records] == ["000001"]
    assert [r.image_id for r in read_kitti(str(root), split=str(tmp_path / "mine.txt")).records] == ["000002"]
    with pytest.raises(DataError, match="no file list for split 'test'"):
        read_kitti(str(root), split="test")
    (root / "ImageSets" / "train.txt").write_text("000000\n\n000009\n")
    with pytest.raises(DataError, match=r"train\.txt:3: lists 000009 but its label file .*000009\.txt is missing"):
        read_kitti(str(root), split="train")


def test_a_byte_order_mark_is_part_of_no_id_or_type(tmp_path: Path) -> None:
    root = make_kitti(tmp_path / "k", {s: [LINE.format("Car", 1, 2, 30, 20)] for s in ("000000", "000001")})
    (root / "label_2" / "000001.txt").write_bytes(b"\xef\xbb\xbf" + LINE.format("Car", 1, 2, 30, 20).encode() + b"\n")
    (root / "train.txt").write_bytes(b"\xef\xbb\xbf000000\n000001\n")
    index = read_kitti(str(root), split="train")
    assert [r.image_id for r in index.records] == ["000000", "000001"] and index.classes == ("Car",)
    assert [r.labels.tolist() for r in index.records] == [[1], [1]]


def test_a_class_map_entry_matching_no_type_is_named(tmp_path: Path) -> None:
    root = make_kitti(tmp_path / "k", {"000000": [LINE.format("Car", 1, 2, 30, 20), LINE.format("Van", 5, 5, 40, 30)]})
    with pytest.warns(DataWarning, match=r"k: class_map entries that match no type in the data: Carr$"):
        index = read_kitti(str(root), classes=["Car"], class_map={"Carr": "Car", "Van": "Car"})
    assert index.report.unused_map == ["Carr"] and index.records[0].labels.tolist() == [1, 1]


def test_degenerate_and_outside_boxes(tmp_path: Path) -> None:
    lines = [LINE.format("Car", 10, 10, 10, 20), LINE.format("Car", 50, 5, 120, 30), LINE.format("Car", 1, 2, 30, 20),
             "DontCare -1 -1 -10 -5.0 0.0 20.0 10.0 -1 -1 -1 -1000 -1000 -1000 -10"]  # fmt: skip
    root = make_kitti(tmp_path / "k", {"000000": lines})
    with pytest.warns(DataWarning, match="dropped 1 box.*clipped 2 box"):
        index = read_kitti(str(root))
    rec = index.records[0]
    assert index.report.dropped == [f"{root / 'label_2' / '000000.txt'}:1"]
    assert index.report.clipped == [f"{root / 'label_2' / '000000.txt'}:{n}" for n in (2, 4)]
    np.testing.assert_allclose(rec.boxes, [[50, 5, 100, 30], [1, 2, 30, 20]])
    assert rec.extras["truncated"].shape == (2,) and rec.extras["occluded"].tolist() == [2, 2]
    np.testing.assert_allclose(rec.ignore_boxes, [[0, 0, 20, 10]])


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (LINE.format("Car", 1, 2, 30, 20) + " 0.93", r"000000\.txt:2: expected 15 fields .* found 16 \(a 16th field is a detection score"),
        ("Car 0.0 0 1 2 3 4", r"000000\.txt:2: expected 15 fields .* found 7"),
        (LINE.format("Car", 1, "abc", 30, 20), r"000000\.txt:2: y1 is not a number: 'abc'"),
        (LINE.format("Car", 1, 2, "nan", 20), r"000000\.txt:2: x2 is not a finite number"),
        (LINE.format("Car", 1, 2, 30, 20).replace(" 2 ", " 1.5 ", 1), r"000000\.txt:2: occluded must be an integer"),
    ],
)
def test_malformed_label_lines_name_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    root = make_kitti(tmp_path / "k", {"000000": [LINE.format("Car", 1, 2, 30, 20), line]})
    with pytest.raises(DataError, match=match):
        read_kitti(str(root))


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    root = make_kitti(tmp_path / "k", {"000000": [LINE.format("Car", 1, 2, 30, 20)]}, image_ext="")
    with pytest.raises(DataError, match=r"000000\.txt: no image 000000\."):
        read_kitti(str(root))
    (root / "image_2" / "000000.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataError, match=r"000000\.jpg: unreadable image"):
        read_kitti(str(root))


def test_label_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"label_2: folder is missing"):
        read_kitti(str(tmp_path))


def test_an_id_listed_twice_is_refused(tmp_path: Path) -> None:
    root = make_kitti(tmp_path / "k", {s: [LINE.format("Car", 1, 2, 30, 20)] for s in ("000000", "000001")})
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n000000.png\n")
    with pytest.raises(DataError, match=r"train\.txt:3: 000000 is listed twice \(first at line 1\)"):
        read_kitti(str(root), split="train")


def test_heights_at_a_level_boundary_are_compared_in_float64(tmp_path: Path) -> None:
    """y1 = 103.08, y2 = 128.08: 25.000000000000014 px in double precision (the devkit's: a
    Moderate object), exactly 25.0 from float32 boxes (not Moderate)."""
    from detkd.data.dataset import DatasetIndex
    from detkd.evaluation.kitti import KITTIEvaluator

    line = "Car 0.00 0 -1.5 10.0 103.08 60.0 128.08 1.5 1.6 3.9 1.0 1.7 20.0 -1.6"
    root = tmp_path / "k"
    (root / "label_2").mkdir(parents=True)
    (root / "image_2").mkdir()
    (root / "label_2" / "000000.txt").write_text(line + "\n")
    cv2.imwrite(str(root / "image_2" / "000000.png"), np.zeros((200, 100, 3), np.uint8))
    index = read_kitti(str(root), classes=["Car"])
    assert index.records[0].extras["height"].tolist() == [128.08 - 103.08]
    import dataclasses

    def moderate(records):
        evaluator = KITTIEvaluator(DatasetIndex("kitti", str(root), None, ("Car",), records))
        evaluator.process([{"image_id": "000000", "boxes": records[0].boxes, "scores": np.ones(1, np.float32),
                            "labels": np.ones(1, np.int64)}])
        return evaluator.evaluate()["Car"]["moderate"]

    assert moderate(index.records) is not None  # a Moderate object: counted
    extras = {k: v for k, v in index.records[0].extras.items() if k != "height"}
    assert moderate([dataclasses.replace(index.records[0], extras=extras)]) is None  # float32 box: not Moderate
