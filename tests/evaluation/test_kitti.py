"""KITTI 2D AP: difficulty filtering case by case, per-class IoU thresholds, and the vectorised
evaluator against a slow, literal port of the devkit's clean_data / compute_statistics /
get_thresholds (one threshold at a time) on random data."""

from __future__ import annotations

import numpy as np
import pytest

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError
from detkd.evaluation.kitti import KITTIEvaluator

CLASSES = ("Car", "Pedestrian", "Cyclist")
CAR, PED = 1, 2


def rec(image_id, boxes=(), labels=(), occluded=None, truncated=None, dontcare=(), dontcare_labels=None,
        nb_boxes=(), nb_labels=()):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    dontcare = np.asarray(dontcare, dtype=np.float32).reshape(-1, 4)
    return ImageRecord(
        image_id=image_id, file_name=f"/k/{image_id}.png", width=1242, height=375, boxes=boxes,
        labels=np.asarray(labels, dtype=np.int64), difficult=np.zeros(n, bool),
        ignore_boxes=dontcare,
        ignore_labels=np.zeros(len(dontcare), np.int64) if dontcare_labels is None else np.asarray(dontcare_labels),
        extras={
            "occluded": np.zeros(n, np.int64) if occluded is None else np.asarray(occluded, np.int64),
            "truncated": np.zeros(n, np.float32) if truncated is None else np.asarray(truncated, np.float32),
            "neighbor_boxes": np.asarray(nb_boxes, np.float32).reshape(-1, 4),
            "neighbor_labels": np.asarray(nb_labels, np.int64),
        },
    )


def pred(image_id, boxes=(), scores=(), labels=()):
    return {"image_id": image_id, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, np.float32), "labels": np.asarray(labels, np.int64)}


def evaluate(records, preds, **kwargs):
    index = DatasetIndex(format="kitti", root="/k", split=None, classes=CLASSES, records=list(records))
    ev = KITTIEvaluator(index, **kwargs)
    ev.process(preds)
    return ev.evaluate()


BOX = [100, 100, 200, 200]  # 100 px high


def base(label=CAR, n=80):
    """80 images, each one easy object perfectly detected: AP 1 at every level. (KITTI's AP
    needs many objects: its thresholds advance by 1/40 of recall per true positive at most.)"""
    records = [rec(f"b{i}", [BOX], [label]) for i in range(n)]
    preds = [pred(f"b{i}", [BOX], [0.9], [label]) for i in range(n)]
    return records, preds


def with_probe(probe_record, probe_pred=None, label=CAR, **kwargs):
    records, preds = base(label)
    records.append(probe_record)
    if probe_pred is not None:
        preds.append(probe_pred)
    return evaluate(records, preds, **kwargs)[CLASSES[label - 1]]


def test_base_is_perfect():
    records, preds = base()
    out = evaluate(records, preds)
    assert out["Car"] == {"easy": 1.0, "moderate": 1.0, "hard": 1.0}
    assert out["Pedestrian"] == {"easy": None, "moderate": None, "hard": None}


def box_of_height(h):
    return [300, 100, 400, 100 + h]


def missed(box, label=CAR, n=10, **fields):
    """A probe image with ``n`` undetected copies of an object (side by side). One missed
    object among 81 would not show: the AP only sees recall through the threshold count."""
    boxes = [[box[0] + 110 * i, box[1], box[2] + 110 * i, box[3]] for i in range(n)]
    return rec("p", boxes, [label] * n, **{k: [v] * n for k, v in fields.items()})


@pytest.mark.parametrize("height, easy_counted, moderate_counted", [
    (24, False, False), (25, False, False), (26, False, True),
    (39, False, True), (40, False, True), (41, True, True),
])
def test_gt_min_height_is_exclusive(height, easy_counted, moderate_counted):
    # A missed object lowers AP only at levels where it counts. Official rule: ignored when
    # height <= MIN_HEIGHT, so exactly 40 px is not Easy and exactly 25 px is not Moderate.
    out = with_probe(missed(box_of_height(height)))
    assert (out["easy"] < 1.0) == easy_counted
    assert (out["moderate"] < 1.0) == moderate_counted
    assert (out["hard"] < 1.0) == moderate_counted


@pytest.mark.parametrize("occluded, counted", [(0, (1, 1, 1)), (1, (0, 1, 1)), (2, (0, 0, 1)), (3, (0, 0, 0))])
def test_occlusion_levels(occluded, counted):
    out = with_probe(missed(BOX, occluded=occluded))
    assert tuple(int(out[lv] < 1.0) for lv in ("easy", "moderate", "hard")) == counted


@pytest.mark.parametrize("truncated, counted", [
    (0.15, (1, 1, 1)), (0.16, (0, 1, 1)), (0.30, (0, 1, 1)), (0.31, (0, 0, 1)), (0.50, (0, 0, 1)), (0.51, (0, 0, 0)),
])
def test_truncation_boundaries_inclusive(truncated, counted):
    out = with_probe(missed(BOX, truncated=truncated))
    assert tuple(int(out[lv] < 1.0) for lv in ("easy", "moderate", "hard")) == counted


def test_ignored_ground_truth_absorbs_a_match_without_counting():
    # A 40 px object detected: at Easy it is ignored, and so is the detection matched to it
    # (no FP); at Moderate it is a true positive.
    out = with_probe(rec("p", [box_of_height(40)], [CAR]), pred("p", [box_of_height(40)], [0.95], [CAR]))
    assert out == {"easy": 1.0, "moderate": 1.0, "hard": 1.0}


@pytest.mark.parametrize("dc_box, fp_counted", [
    ([290, 90, 410, 210], False),  # covers the whole detection: ioa 1 > 0.7
    ([300, 100, 375, 200], False),  # ioa 0.75 > 0.7
    ([300, 100, 360, 200], True),  # ioa 0.6 <= 0.7: still a false positive for Car
])
def test_dontcare_region_hides_false_positives(dc_box, fp_counted):
    fp = pred("p", [[300, 100, 400, 200]], [0.95], [CAR])
    out = with_probe(rec("p", dontcare=[dc_box]), fp)
    assert (out["moderate"] < 1.0) == fp_counted


def test_dontcare_uses_the_class_min_overlap():
    # ioa 0.6: > 0.5 hides a Pedestrian false positive, <= 0.7 does not hide a Car one.
    dc = [300, 100, 360, 200]
    ped = with_probe(rec("p", dontcare=[dc]), pred("p", [[300, 100, 400, 200]], [0.95], [PED]), label=PED)
    car = with_probe(rec("p", dontcare=[dc]), pred("p", [[300, 100, 400, 200]], [0.95], [CAR]))
    assert ped["moderate"] == 1.0 and car["moderate"] < 1.0


def test_crowd_region_of_another_class_does_not_hide():
    out = with_probe(rec("p", dontcare=[BOX], dontcare_labels=[PED]), pred("p", [BOX], [0.95], [CAR]))
    assert out["moderate"] < 1.0


def test_neighbour_van_is_ignored_for_car():
    van = [500, 100, 600, 200]
    # detected neighbour: the detection is matched to ignored ground truth, not a FP
    assert with_probe(rec("p", nb_boxes=[van], nb_labels=[CAR]), pred("p", [van], [0.95], [CAR]))["hard"] == 1.0
    # missed neighbour: not a false negative
    assert with_probe(rec("p", nb_boxes=[van], nb_labels=[CAR]))["hard"] == 1.0
    # without the neighbour, that detection is a false positive
    assert with_probe(rec("p"), pred("p", [van], [0.95], [CAR]))["hard"] < 1.0
    # a neighbour of Pedestrian does not excuse a Car detection
    assert with_probe(rec("p", nb_boxes=[van], nb_labels=[PED]), pred("p", [van], [0.95], [CAR]))["hard"] < 1.0


def test_low_detection_is_ignored_below_the_level_min_height():
    # 30 px false positive: ignored at Easy (30 < 40), counted at Moderate and Hard (30 >= 25).
    out = with_probe(rec("p"), pred("p", [box_of_height(30)], [0.95], [CAR]))
    assert out["easy"] == 1.0 and out["moderate"] < 1.0 and out["hard"] < 1.0
    # 25 px is not below 25: counted at Moderate; 24.9 is ignored.
    assert with_probe(rec("p"), pred("p", [box_of_height(25)], [0.95], [CAR]))["moderate"] < 1.0
    assert with_probe(rec("p"), pred("p", [box_of_height(24.9)], [0.95], [CAR]))["moderate"] == 1.0


def test_iou_threshold_per_class():
    gt, det = [0, 0, 100, 100], [0, 0, 100, 60]  # IoU 0.6: enough for 0.5, not for 0.7
    for label, expect_perfect in ((CAR, False), (PED, True)):
        out = with_probe(rec("p", [gt], [label]), pred("p", [det], [0.95], [label]), label=label)
        assert (out["moderate"] == 1.0) == expect_perfect
    out = with_probe(rec("p", [gt], [CAR]), pred("p", [det], [0.95], [CAR]), min_overlaps={"Car": 0.5})
    assert out["moderate"] == 1.0


def test_iou_must_exceed_min_overlap():
    gt, det = [0, 0, 100, 100], [0, 0, 100, 50]  # IoU exactly 0.5: not > 0.5
    out = with_probe(rec("p", [gt], [PED]), pred("p", [det], [0.95], [PED]), label=PED)
    assert out["moderate"] < 1.0


def test_few_objects_recall_points_40_vs_11():
    # 3 objects, all found (scores .9, .8, .7): get_thresholds keeps all three scores (recall
    # advances 1/40 per kept threshold), so prec = [1, 1, 1, 0, ...] after the envelope:
    # AP_R40 = sum(prec[1:41]) / 40 = 2/40; AP_11 = sum(prec[0:41:4]) / 11 = 1/11.
    boxes = [[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100]]
    records = [rec("a", boxes, [CAR] * 3)]
    preds = [pred("a", boxes, [0.9, 0.8, 0.7], [CAR] * 3)]
    assert evaluate(records, preds)["Car"]["easy"] == pytest.approx(2 / 40)
    assert evaluate(records, preds, recall_points=11)["Car"]["easy"] == pytest.approx(1 / 11)
    with pytest.raises(DetkdError):
        evaluate(records, preds, recall_points=20)


# --- slow reference: a literal port of the devkit, one threshold at a time ---------------

MIN_HEIGHT, MAX_OCC, MAX_TRUNC = [40, 25, 25], [0, 1, 2], [0.15, 0.3, 0.5]
REF_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}


def ref_annos(record, p):
    """The devkit's per-image annotation lists (names, boxes, ...) from our record/prediction."""
    names = [CLASSES[k - 1] for k in record.labels] + ["NB:" + CLASSES[k - 1] for k in record.extras["neighbor_labels"]]
    names += ["DontCare"] * len(record.ignore_boxes)
    nb = len(record.extras["neighbor_labels"]) + len(record.ignore_boxes)
    gt = {
        "name": names,
        "bbox": np.concatenate([record.boxes, record.extras["neighbor_boxes"], record.ignore_boxes]).astype(np.float64),
        "occluded": list(record.extras["occluded"]) + [0] * nb,
        "truncated": list(record.extras["truncated"].astype(np.float64)) + [0.0] * nb,
    }
    dt = {"name": [CLASSES[k - 1] for k in p["labels"]], "bbox": p["boxes"].astype(np.float64),
          "score": p["scores"].astype(np.float64)}
    return gt, dt


def ref_clean(gt, dt, cls, d):
    ignored_gt, ignored_dt, dc, num_valid = [], [], [], 0
    for i, name in enumerate(gt["name"]):
        bb = gt["bbox"][i]
        valid = 1 if name == cls else 0 if name == "NB:" + cls else -1
        ignore = (gt["occluded"][i] > MAX_OCC[d] or gt["truncated"][i] > np.float32(MAX_TRUNC[d])
                  or bb[3] - bb[1] <= MIN_HEIGHT[d])
        if valid == 1 and not ignore:
            ignored_gt.append(0)
            num_valid += 1
        elif valid == 0 or (ignore and valid == 1):
            ignored_gt.append(1)
        else:
            ignored_gt.append(-1)
        if name == "DontCare":
            dc.append(bb)
    for i, name in enumerate(dt["name"]):
        h = abs(dt["bbox"][i][3] - dt["bbox"][i][1])
        ignored_dt.append(1 if h < MIN_HEIGHT[d] else 0 if name == cls else -1)
    return num_valid, ignored_gt, ignored_dt, dc


def ref_overlap(a, b, criterion=-1):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    ua = area_a if criterion == 0 else area_a + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / ua


def ref_statistics(gt, dt, ig_gt, ig_dt, dc, mo, thresh, compute_fp):
    nd = len(dt["name"])
    scores = dt["score"]
    assigned = [False] * nd
    below = [compute_fp and scores[j] < thresh for j in range(nd)]
    tp = fp = 0
    thresholds = []
    for i in range(len(gt["name"])):
        if ig_gt[i] == -1:
            continue
        det_idx, valid, max_ov, assigned_ignored = -1, -10000000, 0, False
        for j in range(nd):
            if ig_dt[j] == -1 or assigned[j] or below[j]:
                continue
            ov = ref_overlap(dt["bbox"][j], gt["bbox"][i])
            if not compute_fp and ov > mo and scores[j] > valid:
                det_idx, valid = j, scores[j]
            elif compute_fp and ov > mo and (ov > max_ov or assigned_ignored) and ig_dt[j] == 0:
                max_ov, det_idx, valid, assigned_ignored = ov, j, 1, False
            elif compute_fp and ov > mo and valid == -10000000 and ig_dt[j] == 1:
                det_idx, valid, assigned_ignored = j, 1, True
        if valid == -10000000:
            continue
        if ig_gt[i] == 1 or ig_dt[det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            thresholds.append(scores[det_idx])
            assigned[det_idx] = True
    if compute_fp:
        for j in range(nd):
            if not (assigned[j] or ig_dt[j] in (-1, 1) or below[j]):
                fp += 1
        for box in dc:
            for j in range(nd):
                if assigned[j] or ig_dt[j] in (-1, 1) or below[j]:
                    continue
                if ref_overlap(dt["bbox"][j], box, criterion=0) > mo:
                    assigned[j] = True
                    fp -= 1
    return tp, fp, thresholds


def ref_get_thresholds(scores, num_gt):
    scores = sorted(scores, reverse=True)
    current, out = 0.0, []
    for i, s in enumerate(scores):
        l_r = (i + 1) / num_gt
        r_r = (i + 2) / num_gt if i < len(scores) - 1 else l_r
        if (r_r - current) < (current - l_r) and i < len(scores) - 1:
            continue
        out.append(s)
        current += 1 / 40.0
    return out


def ref_ap(annos, cls, d, recall_points):
    mo = REF_OVERLAP[cls]
    cleaned = [ref_clean(gt, dt, cls, d) for gt, dt in annos]
    num_valid = sum(c[0] for c in cleaned)
    if num_valid == 0:
        return None
    found = []
    for (gt, dt), (_, ig_gt, ig_dt, dc) in zip(annos, cleaned):
        found += ref_statistics(gt, dt, ig_gt, ig_dt, dc, mo, 0.0, False)[2]
    thresholds = ref_get_thresholds(found, num_valid)
    prec = np.zeros(41)
    for t, thresh in enumerate(thresholds):
        tp = fp = 0
        for (gt, dt), (_, ig_gt, ig_dt, dc) in zip(annos, cleaned):
            a, b, _ = ref_statistics(gt, dt, ig_gt, ig_dt, dc, mo, thresh, True)
            tp, fp = tp + a, fp + b
        prec[t] = tp / (tp + fp) if tp + fp > 0 else 0.0
    for i in range(41):
        prec[i] = prec[i:].max()
    return sum(prec[1:]) / 40 if recall_points == 40 else sum(prec[0::4]) / 11


def random_kitti(seed, n_images=60):
    rng = np.random.default_rng(seed)
    records, preds = [], []
    for i in range(n_images):
        n = int(rng.integers(0, 10))
        xy = rng.uniform(0, 400, (n, 2))
        wh = np.stack([rng.uniform(10, 120, n), rng.choice([20.0, 25.0, 30.0, 40.0, 41.0, 60.0, 90.0], n)], 1)
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(1, 4, n)
        n_nb, n_dc = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        nb = np.concatenate([rng.uniform(0, 400, (n_nb, 2)), np.zeros((n_nb, 2))], 1)
        nb[:, 2:] = nb[:, :2] + rng.uniform(20, 100, (n_nb, 2))
        dc = np.concatenate([rng.uniform(0, 400, (n_dc, 2)), np.zeros((n_dc, 2))], 1)
        dc[:, 2:] = dc[:, :2] + rng.uniform(30, 150, (n_dc, 2))
        records.append(rec(str(i), boxes, labels, occluded=rng.choice([0, 0, 0, 1, 2, 3], n),
                           truncated=rng.choice([0.0, 0.0, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7], n), dontcare=dc,
                           nb_boxes=nb, nb_labels=rng.integers(1, 4, n_nb)))
        m = int(rng.integers(0, 15))
        pick = rng.integers(0, n + n_nb + n_dc, m) if n + n_nb + n_dc else np.full(m, n + n_nb + n_dc)
        src_labels = np.concatenate([labels, rng.integers(1, 4, n_nb + n_dc), [1]])[pick]
        src = np.concatenate([boxes, nb, dc, [[0, 0, 300, 300]]])[pick]
        det = src + rng.normal(0, 4, (m, 4))
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 2)
        det_labels = np.where(rng.random(m) < 0.85, src_labels, rng.integers(1, 4, m))
        # scores rounded to 2 decimals: many ties, to check the tie-breaking order too
        preds.append(pred(str(i), det, np.round(rng.random(m), 2), det_labels))
    return records, preds


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("recall_points", [40, 11])
def test_matches_slow_reference_on_random_data(seed, recall_points):
    records, preds = random_kitti(seed)
    out = evaluate(records, preds, recall_points=recall_points)
    annos = [ref_annos(r, p) for r, p in zip(records, preds)]
    for cls in CLASSES:
        for d, level in enumerate(("easy", "moderate", "hard")):
            ref = ref_ap(annos, cls, d, recall_points)
            if ref is None:
                assert out[cls][level] is None, (cls, level)
            else:
                assert out[cls][level] == pytest.approx(ref, abs=1e-12), (cls, level)
