"""VOC AP: hand-computed small cases, and the vectorised evaluator against a direct port of the
devkit's per-detection loop (VOCevaldet.m) on random data."""

from __future__ import annotations

import numpy as np
import pytest

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError
from detkd.evaluation.voc import VOCEvaluator


def rec(image_id, boxes=(), labels=(), difficult=None, ignore_boxes=(), ignore_labels=(), extras=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return ImageRecord(
        image_id=image_id, file_name=f"/x/{image_id}.jpg", width=500, height=400, boxes=boxes,
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool),
        ignore_boxes=np.asarray(ignore_boxes, dtype=np.float32).reshape(-1, 4),
        ignore_labels=np.asarray(ignore_labels, dtype=np.int64), extras=extras or {},
    )


def index_of(records, classes=("a", "b")):
    return DatasetIndex(format="voc", root="/x", split=None, classes=tuple(classes), records=list(records))


def pred(image_id, boxes, scores, labels):
    return {"image_id": image_id, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, np.float32), "labels": np.asarray(labels, np.int64)}


def run(index, preds, use_07):
    ev = VOCEvaluator(index, use_07_metric=use_07)
    ev.process(preds)
    return ev.evaluate()


G1, G2, G3 = [10, 10, 60, 60], [100, 100, 150, 160], [200, 50, 260, 120]
FAR = [400, 300, 450, 390]


@pytest.mark.parametrize("use_07", [True, False])
def test_perfect_detection(use_07):
    index = index_of([rec("1", [G1], [1])], classes=("a",))
    out = run(index, [pred("1", [G1], [0.9], [1])], use_07)
    assert out == {"mAP": 1.0, "per_class": {"a": 1.0}}


def test_duplicates_and_11_point_vs_all_point():
    # 2 objects; score order: d1 on G1 (TP), d2 on G1 again (duplicate: FP), d3 on G2 (TP).
    # rec = [.5, .5, 1], prec = [1, .5, 2/3].
    # all-point: envelope 1 on (0, .5], 2/3 on (.5, 1] -> .5 * 1 + .5 * 2/3 = 5/6.
    # 11-point: t = 0..0.5 (6 points) -> 1; t = 0.6..1 (5 points) -> 2/3 -> (6 + 10/3) / 11 = 28/33.
    index = index_of([rec("1", [G1, G2], [1, 1])], classes=("a",))
    preds = [pred("1", [G1, G1, G2], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert run(index, preds, False)["per_class"]["a"] == pytest.approx(5 / 6)
    assert run(index, preds, True)["per_class"]["a"] == pytest.approx(28 / 33)


def test_11_point_vs_all_point_thirds():
    # 3 objects; dets in score order: FP, TP, TP, FP, TP.
    # rec = [0, 1/3, 2/3, 2/3, 1], prec = [0, 1/2, 2/3, 1/2, 3/5].
    # all-point envelope: 2/3 up to recall 2/3, then 3/5 -> 1/3 * 2/3 + 1/3 * 2/3 + 1/3 * 3/5 = 29/45.
    # 11-point: t = 0..0.6 (7 points: 1/3 >= 0.3 and 2/3 >= 0.6) -> 2/3; t = 0.7..1 (4) -> 3/5
    #   -> (7 * 2/3 + 4 * 3/5) / 11 = (14/3 + 12/5) / 11 = 106/165.
    index = index_of([rec("1", [G1, G2, G3], [1, 1, 1])], classes=("a",))
    preds = [pred("1", [FAR, G1, G2, FAR, G3], [0.95, 0.9, 0.8, 0.7, 0.6], [1] * 5)]
    assert run(index, preds, False)["per_class"]["a"] == pytest.approx(29 / 45)
    assert run(index, preds, True)["per_class"]["a"] == pytest.approx(106 / 165)


@pytest.mark.parametrize("use_07", [True, False])
def test_difficult_object_is_neither_tp_nor_fp(use_07):
    # G2 difficult: two dets on it (0.95, 0.9) are ignored (not FP, even the second); npos = 1.
    # Counted: TP (0.8, G1), FP (0.7, far) -> rec [1, 1], prec [1, .5] -> AP 1 with both metrics.
    # Were the difficult matches false positives, AP would be 1/3.
    index = index_of([rec("1", [G1, G2], [1, 1], difficult=[False, True])], classes=("a",))
    preds = [pred("1", [G2, G2, G1, FAR], [0.95, 0.9, 0.8, 0.7], [1] * 4)]
    assert run(index, preds, use_07)["per_class"]["a"] == pytest.approx(1.0)


def test_difficult_objects_are_not_positives():
    # Only a difficult object of class a: no positives -> None; the mean ignores it.
    index = index_of([rec("1", [G1, G2], [1, 2], difficult=[True, False])])
    out = run(index, [pred("1", [G1, G2], [0.9, 0.9], [1, 2])], False)
    assert out == {"mAP": 1.0, "per_class": {"a": None, "b": 1.0}}


@pytest.mark.parametrize("use_07", [True, False])
def test_class_without_ground_truth_is_none_and_left_out(use_07):
    # b has detections but no ground truth: None; mAP is a's AP alone.
    # a: 2 objects in 2 images, one found: rec .5 prec 1 -> all-point .5, 11-point 6/11.
    index = index_of([rec("1", [G1], [1]), rec("2", [G2], [1])])
    preds = [pred("1", [G1, G3], [0.9, 0.8], [1, 2]), pred("2", [], [], [])]
    out = run(index, preds, use_07)
    expected = 6 / 11 if use_07 else 0.5
    assert out["per_class"]["b"] is None
    assert out["per_class"]["a"] == pytest.approx(expected)
    assert out["mAP"] == pytest.approx(expected)


def test_image_without_predictions_counts_as_no_detections():
    index = index_of([rec("1", [G1], [1]), rec("2", [G2], [1])], classes=("a",))
    out = run(index, [pred("1", [G1], [0.9], [1])], False)  # image "2" never processed
    assert out["per_class"]["a"] == pytest.approx(0.5)


def test_no_ground_truth_at_all():
    index = index_of([rec("1")], classes=("a",))
    assert run(index, [pred("1", [G1], [0.5], [1])], False) == {"mAP": None, "per_class": {"a": None}}


def test_iou_boundary_is_inclusive_and_continuous():
    # GT (devkit 1-based [1, 1, 10, 10] -> continuous [0, 0, 10, 10], area 100 as in the devkit).
    index = index_of([rec("1", [[0, 0, 10, 10]], [1])], classes=("a",))
    exact_half = pred("1", [[0, 0, 10, 20]], [0.9], [1])  # IoU 100/200 = 0.5 -> TP (>=)
    below = pred("1", [[0, 0, 10, 20.5]], [0.9], [1])  # IoU 100/205 < 0.5 -> FP
    assert run(index, [exact_half], False)["mAP"] == 1.0
    assert run(index, [below], False)["mAP"] == 0.0


def test_max_iou_object_decides_even_if_taken():
    # Devkit rule: a det is compared with its max-IoU object only; if that one is already
    # detected the det is FP even though it also overlaps another free object >= 0.5.
    a, b = [0, 0, 100, 100], [0, 0, 100, 80]  # IoU(a, b) = 0.8
    index = index_of([rec("1", [a, b], [1, 1])], classes=("a",))
    preds = [pred("1", [a, a], [0.9, 0.8], [1, 1])]  # second: max IoU with a (taken) -> FP
    # rec [.5, .5], prec [1, .5] -> all-point 0.5
    assert run(index, preds, False)["per_class"]["a"] == pytest.approx(0.5)


def test_ignore_regions_and_neighbours_act_as_difficult():
    # DontCare (label 0) region, a crowd region of class a, a neighbour of class a: all ignored.
    extras = {"neighbor_boxes": np.asarray([G3], np.float32), "neighbor_labels": np.asarray([1])}
    index = index_of([rec("1", [G1], [1], ignore_boxes=[G2, FAR], ignore_labels=[0, 1], extras=extras)],
                     classes=("a",))
    preds = [pred("1", [G2, FAR, G3, G1], [0.99, 0.98, 0.97, 0.5], [1] * 4)]
    assert run(index, preds, False)["per_class"]["a"] == 1.0


def test_unknown_image_id_is_a_clear_error():
    ev = VOCEvaluator(index_of([rec("1", [G1], [1])]), use_07_metric=False)
    with pytest.raises(DetkdError, match="unknown image_id"):
        ev.process([pred("nope", [G1], [0.9], [1])])
    with pytest.raises(DetkdError, match="labels must be integers in 1..2"):
        ev.process([pred("1", [G1], [0.9], [3])])


# --- reference: the devkit's loop, one detection at a time ---------------------------------


def devkit_ap(index, preds, cls, use_07):
    gt = {}
    npos = 0
    for r in index.records:
        m = r.labels == cls
        diff = np.asarray(r.difficult)[m]
        gt[r.image_id] = {"bb": np.asarray(r.boxes)[m], "diff": diff, "det": np.zeros(m.sum(), bool)}
        npos += int((~diff).sum())
    ids, conf, bbs = [], [], []
    for p in preds:
        for b, s, lab in zip(p["boxes"], p["scores"], p["labels"]):
            if lab == cls:
                ids.append(p["image_id"])
                conf.append(float(s))
                bbs.append(np.asarray(b, float))
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, i in enumerate(order):
        g, bb = gt[ids[i]], bbs[i]
        ovmax, jmax = -np.inf, -1
        for j, bbgt in enumerate(g["bb"]):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0])
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1])
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (bbgt[2] - bbgt[0]) * (bbgt[3] - bbgt[1]) - iw * ih
                if iw * ih / ua > ovmax:
                    ovmax, jmax = iw * ih / ua, j
        if ovmax >= 0.5:
            if not g["diff"][jmax]:
                if not g["det"][jmax]:
                    tp[d], g["det"][jmax] = 1, True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    if npos == 0:
        return None
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (tp + fp)
    if use_07:
        ap = 0.0
        for t in range(11):
            p = prec[recall >= t / 10]
            p = p[~np.isnan(p)]
            ap += (p.max() if p.size else 0.0) / 11
        return ap
    mrec = np.concatenate(([0], recall, [1]))
    mpre = np.nan_to_num(np.concatenate(([0], prec, [0])))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def random_case(seed, n_images=40, k=3):
    rng = np.random.default_rng(seed)
    records, preds = [], []
    for i in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(10, 100, (n, 2))
        boxes = np.round(np.concatenate([xy, xy + wh], 1), 1)
        labels = rng.integers(1, k + 1, n)
        records.append(rec(str(i), boxes, labels, difficult=rng.random(n) < 0.2))
        m = int(rng.integers(0, 12))
        src = rng.integers(0, max(n, 1), m)
        jit = boxes[src] + rng.normal(0, 6, (m, 4)) if n else rng.uniform(0, 300, (m, 4))
        jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 1)
        dl = np.where(rng.random(m) < 0.8, labels[src] if n else 1, rng.integers(1, k + 1, m))
        scores = np.round(rng.random(m), 2)  # rounded: many ties, to check the stable order
        preds.append(pred(str(i), jit, scores, dl))
    return index_of(records, classes=("a", "b", "c")), preds


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [True, False])
def test_matches_devkit_loop_on_random_data(seed, use_07):
    index, preds = random_case(seed)
    out = run(index, preds, use_07)
    for k, name in enumerate(index.classes, start=1):
        ref = devkit_ap(index, preds, k, use_07)
        if ref is None:
            assert out["per_class"][name] is None
        else:
            assert out["per_class"][name] == pytest.approx(ref, abs=1e-12)
