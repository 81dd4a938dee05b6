"""COCO AP: our evaluator against pycocotools called directly, on the real COCO subset, and the
in-memory ground truth on a few hand-made records."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.evaluation.coco import COCOEvaluator
from detkd.evaluation.results import load_results, write_results

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_index(ann_file):
    """A DatasetIndex straight from an instances file (not using detkd's reader)."""
    data = json.loads(open(ann_file).read())
    cats = sorted(c["id"] for c in data["categories"])
    names = {c["id"]: c["name"] for c in data["categories"]}
    label_of = {cat: k for k, cat in enumerate(cats, start=1)}
    anns: dict[int, list] = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    records = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        objs = [a for a in anns.get(img["id"], []) if not a["iscrowd"]]
        crowd = [a for a in anns.get(img["id"], []) if a["iscrowd"]]
        xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
        records.append(ImageRecord(
            image_id=img["id"], file_name=img["file_name"], width=img["width"], height=img["height"],
            boxes=np.array([xyxy(a["bbox"]) for a in objs], np.float32).reshape(-1, 4),
            labels=np.array([label_of[a["category_id"]] for a in objs], np.int64),
            difficult=np.zeros(len(objs), bool),
            ignore_boxes=np.array([xyxy(a["bbox"]) for a in crowd], np.float32).reshape(-1, 4),
            ignore_labels=np.array([label_of[a["category_id"]] for a in crowd], np.int64),
            extras={"area": np.array([a["area"] for a in objs], np.float64)},
        ))
    return DatasetIndex(format="coco", root="/coco", split="val2017", classes=tuple(names[c] for c in cats),
                        records=records, category_ids={k: c for c, k in label_of.items()})


def fake_detections(index, seed=0):
    """Perturbed ground-truth boxes (80% of objects, some with the wrong class) plus random
    false positives, seeded."""
    rng = np.random.default_rng(seed)
    preds = []
    for r in index.records:
        keep = rng.random(len(r.labels)) < 0.8
        gt = r.boxes[keep].astype(np.float64)
        size = np.concatenate([gt[:, 2:] - gt[:, :2]] * 2, axis=1)
        boxes = gt + rng.normal(0, 0.1, gt.shape) * size
        labels = np.where(rng.random(len(gt)) < 0.9, r.labels[keep], rng.integers(1, index.num_classes + 1, len(gt)))
        n_fp = int(rng.integers(0, 8))
        xy = rng.uniform(0, [r.width - 20, r.height - 20], (n_fp, 2))
        fp = np.concatenate([xy, xy + rng.uniform(5, 200, (n_fp, 2))], axis=1)
        boxes = np.concatenate([boxes, fp]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        preds.append({
            "image_id": r.image_id, "boxes": boxes,
            "scores": np.concatenate([rng.uniform(0.3, 1, len(gt)), rng.uniform(0, 0.7, n_fp)]).astype(np.float32),
            "labels": np.concatenate([labels, rng.integers(1, index.num_classes + 1, n_fp)]),
        })
    return preds


def pycocotools_direct(ann_file, results_file):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        dt = gt.loadRes(str(results_file))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.fixture(scope="module")
def coco_case(coco_root, tmp_path_factory):
    ann_file = str(coco_root / "annotations" / "instances_val2017.json")
    index = coco_index(ann_file)
    preds = fake_detections(index)
    results_file = tmp_path_factory.mktemp("coco") / "dets.json"
    write_results(preds, index, results_file)
    return ann_file, index, preds, results_file, pycocotools_direct(ann_file, results_file)


def test_identical_to_pycocotools_on_coco128(coco_case):
    ann_file, index, preds, _, direct = coco_case
    ev = COCOEvaluator(index)
    ev.process(preds[:50])
    ev.process(preds[50:])  # in two batches
    out = ev.evaluate()
    assert [out[k] for k in KEYS] == [float(v) for v in direct.stats[:6]]
    assert 0.2 < out["AP"] < 0.9 and "Average Precision" in ev.summary_text
    precision = direct.eval["precision"]
    for k, name in enumerate(index.classes, start=1):
        p = precision[:, :, direct.params.catIds.index(index.category_ids[k]), 0, -1]
        p_all, p50 = p[p > -1], p[0][p[0] > -1]
        assert out["per_class"][name] == (float(p_all.mean()) if p_all.size else None)
        assert out["per_class_ap50"][name] == (float(p50.mean()) if p50.size else None)
    assert sum(v is None for v in out["per_class"].values()) > 0  # coco128 lacks some classes


def test_loaded_results_file_matches_pycocotools(coco_case):
    ann_file, index, _, results_file, direct = coco_case
    ev = COCOEvaluator(index)
    ev.process(load_results(results_file, index))
    out = ev.evaluate()
    assert [out[k] for k in KEYS] == pytest.approx([float(v) for v in direct.stats[:6]], abs=1e-9)


def test_detkds_reader_scores_what_pycocotools_scores_on_the_file(coco_case):
    # the records of detkd's own reader (area kept, crowd as ignore regions) give pycocotools'
    # numbers on the instances file, the area-range ones included; without the file's areas
    # (box areas instead) only AP and AP50, which do not depend on areas, still agree
    from detkd.data.coco import read_coco

    ann_file, _, preds, _, direct = coco_case
    index = read_coco(str(Path(ann_file).parents[1]), split="val2017")
    ev = COCOEvaluator(index)
    ev.process(preds)
    assert [ev.evaluate()[k] for k in KEYS] == pytest.approx([float(v) for v in direct.stats[:6]], abs=1e-12)
    boxed = dataclasses.replace(index, records=[dataclasses.replace(r, extras={}) for r in index.records])
    ev = COCOEvaluator(boxed)
    ev.process(preds)
    out = ev.evaluate()
    assert (out["AP"], out["AP50"]) == pytest.approx((direct.stats[0], direct.stats[1]), abs=1e-12)


def test_annotations_without_area_or_iscrowd_are_read(tmp_path):
    from detkd.data.coco import read_coco

    (tmp_path / "annotations").mkdir()
    (tmp_path / "val").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "val" / "a.png"), np.zeros((40, 50, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
            "categories": [{"id": 3, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10]}]}
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    index = read_coco(str(tmp_path), split="val")
    assert index.records[0].extras["area"].tolist() == [200.0]
    ev = COCOEvaluator(index)
    ev.process([{"image_id": 1, "boxes": np.array([[5, 5, 25, 15]], np.float32), "scores": np.ones(1, np.float32),
                 "labels": np.ones(1, np.int64)}])
    assert ev.evaluate()["AP50"] == pytest.approx(1.0)


def rec(image_id, boxes, labels, difficult=None, ignore_boxes=(), ignore_labels=()):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(
        image_id=image_id, file_name=f"/v/{image_id}.jpg", width=500, height=400, boxes=boxes,
        labels=np.asarray(labels, np.int64),
        difficult=np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool),
        ignore_boxes=np.asarray(ignore_boxes, np.float32).reshape(-1, 4), ignore_labels=np.asarray(ignore_labels, np.int64))


def pred(image_id, boxes, scores, labels):
    return {"image_id": image_id, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, np.float32), "labels": np.asarray(labels)}


A, B, C = [10, 10, 110, 110], [200, 50, 260, 250], [300, 300, 340, 330]


def test_in_memory_ground_truth_hand_made():
    index = DatasetIndex(format="voc", root="/v", split=None, classes=("cat", "dog", "bird"), records=[
        rec("000001", [A, B], [1, 2], difficult=[False, True]),
        rec("000002", [C], [1], ignore_boxes=[A], ignore_labels=[0]),
    ])
    ev = COCOEvaluator(index)
    ev.process([
        pred("000001", [A, B], [0.9, 0.8], [1, 2]),  # cat found; dog is difficult (crowd): free
        pred("000002", [C, A], [0.7, 0.95], [1, 1]),  # cat found; det in a DontCare region: free
    ])
    out = ev.evaluate()
    # every counted object found exactly, no counted false positive -> AP 1 for cat
    assert out["AP"] == 1.0 and out["AP50"] == 1.0 and out["AP75"] == 1.0
    assert out["per_class"] == {"cat": 1.0, "dog": None, "bird": None}
    assert out["APs"] is None  # no small object: pycocotools' -1
    assert out["APm"] == pytest.approx(1.0) and out["APl"] == pytest.approx(1.0)
    # the built ground truth: string ids numbered 1..N, difficult and DontCare -> iscrowd
    gt = ev.ground_truth()
    assert sorted(gt.getImgIds()) == [1, 2]
    crowd = [a for a in gt.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 + 3  # the difficult dog, DontCare once per class


def test_missed_and_false_positive_in_memory():
    index = DatasetIndex(format="voc", root="/v", split=None, classes=("cat",), records=[
        rec("a", [A], [1]), rec("b", [C], [1])])
    ev = COCOEvaluator(index)
    ev.process([pred("a", [A, B], [0.9, 0.95], [1, 1])])  # FP ranked first, b missed
    out = ev.evaluate()
    # precision at recall <= .5 is 1/2 (the envelope), 0 beyond: AP = 51 * 0.5 / 101
    assert out["AP50"] == pytest.approx(51 * 0.5 / 101)


def test_no_detections_at_all():
    index = DatasetIndex(format="voc", root="/v", split=None, classes=("cat",), records=[rec("a", [A], [1])])
    out = COCOEvaluator(index).evaluate()
    assert out["AP"] == 0.0 and out["per_class"] == {"cat": 0.0}

