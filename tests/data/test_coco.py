"""The COCO reader on coco128 (counts checked against the JSON) and on broken files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkd.data import DataWarning, read_coco
from detkd.errors import DataError, DetkdError


@pytest.fixture(scope="module")
def raw(coco_root: Path) -> dict:
    return json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())


@pytest.fixture(scope="module")
def coco(coco_root: Path):
    return read_coco(str(coco_root), split="val2017")


def test_coco128_counts_match_the_json(raw: dict, coco) -> None:
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert len(coco.records) == len(raw["images"]) == 128
    assert [r.image_id for r in coco.records] == [im["id"] for im in raw["images"]]
    assert sum(len(r.boxes) for r in coco.records) == len(raw["annotations"]) - len(crowd)
    assert sum(len(r.ignore_boxes) for r in coco.records) == len(crowd) == 10
    assert coco.num_classes == len(raw["categories"]) == 80
    present = {coco.category_ids[int(k)] for r in coco.records for k in np.concatenate([r.labels, r.ignore_labels])}
    assert present == {a["category_id"] for a in raw["annotations"]} and len(present) == 71
    annotated = {a["image_id"] for a in raw["annotations"]}
    assert sum(1 for r in coco.records if r.image_id not in annotated) == 2  # kept, with no boxes


def test_labels_map_back_to_category_ids(raw: dict, coco) -> None:
    cats = sorted(raw["categories"], key=lambda c: c["id"])
    assert coco.classes == tuple(c["name"] for c in cats)
    assert coco.category_ids == {k: c["id"] for k, c in enumerate(cats, start=1)}
    ann = next(a for a in raw["annotations"] if not a["iscrowd"])
    rec = next(r for r in coco.records if r.image_id == ann["image_id"])
    x, y, w, h = ann["bbox"]
    i = int(np.argmin(np.abs(rec.boxes - np.array([x, y, x + w, y + h], np.float32)).sum(1)))
    np.testing.assert_allclose(rec.boxes[i], [x, y, x + w, y + h], rtol=1e-5)
    assert coco.category_ids[int(rec.labels[i])] == ann["category_id"]


def test_crowd_regions_carry_their_label(raw: dict, coco) -> None:
    crowd = Counter(a["category_id"] for a in raw["annotations"] if a["iscrowd"])
    got = Counter(coco.category_ids[int(k)] for r in coco.records for k in r.ignore_labels)
    assert got == crowd


def test_class_subset_in_the_given_order(raw: dict, coco_root: Path) -> None:
    names = {c["id"]: c["name"] for c in raw["categories"]}
    with pytest.warns(DataWarning, match="left out"):
        index = read_coco(str(coco_root), split="val2017", classes=["dog", "person"])
    assert index.classes == ("dog", "person") and index.category_ids == {1: 18, 2: 1}
    counts = Counter(int(k) for r in index.records for k in r.labels)
    expected = Counter(a["category_id"] for a in raw["annotations"] if not a["iscrowd"])
    assert counts == {1: expected[18], 2: expected[1]}
    skipped = Counter(names[a["category_id"]] for a in raw["annotations"] if a["category_id"] not in (1, 18))
    assert index.report.skipped_classes == skipped
    with pytest.raises(DataError, match="no category named doge"):
        read_coco(str(coco_root), split="val2017", classes=["doge"])


# --- small COCO files written into tmp_path ----------------------------------------------------


def coco_json(**overrides: object) -> dict:
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50}, {"id": 9, "file_name": "b.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 40], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
    }
    data.update(overrides)
    return data


def make_coco(root: Path, data: dict | str, images: tuple[str, ...] = ("a.jpg", "b.jpg")) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    for name in images:
        cv2.imwrite(str(root / "train" / name), np.zeros((50, 100, 3), np.uint8))
    text = data if isinstance(data, str) else json.dumps(data, indent=1)
    (root / "annotations" / "instances_train.json").write_text(text)
    return root


def test_small_file(tmp_path: Path) -> None:
    index = read_coco(str(make_coco(tmp_path / "c", coco_json())), split="train")
    assert index.classes == ("dog", "cat") and index.category_ids == {1: 1, 2: 3}
    a, b = index.records
    assert a.image_id == 7 and a.labels.tolist() == [2] and a.ignore_labels.tolist() == [1]
    np.testing.assert_allclose(a.boxes, [[10, 10, 30, 30]])
    assert (b.width, b.height) == (100, 50) and len(b.boxes) == 0  # size from the image header


def test_images_beside_the_annotations_folder_and_explicit_ann(tmp_path: Path) -> None:
    root = tmp_path / "c"
    make_coco(root, coco_json())
    for name in ("a.jpg", "b.jpg"):
        (root / "train" / name).rename(root / name)
    (root / "train").rmdir()
    index = read_coco(str(root), split="train")
    assert index.records[0].file_name == str(root / "a.jpg")
    index = read_coco(str(root), ann=str(root / "annotations" / "instances_train.json"))
    assert len(index.records) == 2
    with pytest.raises(DetkdError, match="needs a split"):
        read_coco(str(root))


def test_degenerate_and_outside_boxes(tmp_path: Path) -> None:
    anns = [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 0, 20]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [90, 10, 20, 20]}]  # fmt: skip
    root = make_coco(tmp_path / "c", coco_json(annotations=anns))
    with pytest.warns(DataWarning, match="dropped 1 box.*clipped 1 box"):
        index = read_coco(str(root), split="train")
    assert "instances_train.json (annotation 1)" in index.report.dropped[0]
    np.testing.assert_allclose(index.records[0].boxes, [[90, 10, 100, 30]])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ('{"images": [\n  {"id": 1,}\n]}', r"instances_train\.json:2: malformed JSON"),
        ("[]", r"instances_train\.json: expected a JSON object"),
        (coco_json(annotations=None), r"instances_train\.json: expected a list under 'annotations'"),
        (coco_json(categories=[{"id": "3", "name": "cat"}]), r"category 0 needs an integer 'id'"),
        (coco_json(images=[{"id": 7}]), r"image 0 needs an integer 'id' and a string 'file_name'"),
        (coco_json(images=[{"id": 7, "file_name": "a.jpg"}] * 2), r"image id 7 appears twice"),
        (coco_json(annotations=[{"id": 5, "image_id": 8, "category_id": 3, "bbox": [1, 1, 2, 2]}]), r"annotation 5 refers to no image"),
        (coco_json(annotations=[{"id": 5, "image_id": 7, "category_id": 4, "bbox": [1, 1, 2, 2]}]), r"annotation 5 has an unknown category_id 4"),
        (coco_json(annotations=[{"id": 5, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2]}]), r"annotation 5: bbox must be"),
        (coco_json(annotations=[{"id": 5, "image_id": 7, "category_id": 3, "bbox": [1, "x", 2, 2]}]), r"annotation 5 bbox is not a number"),
        (coco_json(annotations=[{"id": 5, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2]}] * 2),
         r"annotation id 5 appears twice \(entries 0 and 1 of 'annotations'\)"),
        (coco_json(categories=[{"id": 3, "name": "cat"}, {"id": 1, "name": "cat"}]), None),
    ],
)
def test_malformed_json_names_the_file(tmp_path: Path, data: dict | str, match: str | None) -> None:
    root = make_coco(tmp_path / "c", data)
    if match is None:  # two categories named alike are fine until one is selected by name
        read_coco(str(root), split="train")
        with pytest.raises(DataError, match=r"instances_train\.json: several categories are named cat"):
            read_coco(str(root), split="train", classes=["cat"])
        return
    with pytest.raises(DataError, match=match):
        read_coco(str(root), split="train")


def test_missing_files(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "c", coco_json(), images=("a.jpg",))
    with pytest.raises(DataError, match=r"instances_train\.json: image 9: file .*b\.jpg is missing"):
        read_coco(str(root), split="train")
    with pytest.raises(DataError, match=r"instances_val\.json: annotation file is missing"):
        read_coco(str(root), split="val")


def test_a_duplicate_annotation_id_is_refused_by_evaluate_and_stats(tmp_path: Path, cli_error) -> None:
    """Perfect detections scored 0.994 against a file listing one object twice; both commands now refuse it."""
    anns = [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 9, "category_id": 1, "bbox": [50, 5, 30, 30]},
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20]}]  # fmt: skip
    root = make_coco(tmp_path / "c", coco_json(annotations=anns))
    results = tmp_path / "dets.json"
    results.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                                    "score": 0.9} for a in anns[:2]]))
    ann = root / "annotations" / "instances_train.json"
    dataset = ("--format", "coco", "--root", root, "--split", "train")
    for args in (("evaluate", *dataset, "--results", results), ("data", "stats", *dataset)):
        assert cli_error(*args) == (f"detkd: error: {ann}: annotation id 1 appears twice (entries 0 and 2 of "
                                    "'annotations'): its object would be counted twice")
