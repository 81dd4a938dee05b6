"""KITTI 2D object detection AP (Easy / Moderate / Hard), vectorised over score thresholds.

This follows the official devkit (``evaluate_object.cpp``) as ported to Python in
``kitti-object-eval-python`` / second.pytorch (``clean_data``, ``compute_statistics``,
``get_thresholds``, 41 sample points), for the 2D ``bbox`` metric:

- Levels (``MIN_HEIGHT``, ``MAX_OCCLUSION``, ``MAX_TRUNCATION``) = Easy (40, 0, 0.15),
  Moderate (25, 1, 0.30), Hard (25, 2, 0.50). A ground-truth object of the class is ignored
  at a level when ``occluded > MAX_OCCLUSION`` or ``truncated > MAX_TRUNCATION`` or
  ``height <= MIN_HEIGHT`` (height ``y2 - y1`` in pixels). Note the official ``<=``: an object
  exactly 40 px high is *not* Easy ("height >= 40" is a common shorthand; docs/METHOD.md section 9).
- Neighbour objects (``extras["neighbor_boxes"]`` with ``neighbor_labels`` = the label of the
  class they neighbour, e.g. Van for Car) are ignored ground truth of that class.
- A detection lower than ``MIN_HEIGHT`` (``|y2 - y1| < MIN_HEIGHT``, any class, as in the
  official code) is an ignored detection: it may absorb a match but is never counted; a
  detection of another class at least that high plays no part.
- Matching uses IoU ``> min_overlap`` (strict); ignored ground truth and ignored detections
  match without counting. An unmatched detection whose intersection over its own area with a
  ``DontCare`` region (``ignore_labels`` 0, or a crowd region of its own class) is
  ``> min_overlap`` is not a false positive.
- Precision is sampled at the <= 41 score thresholds of ``get_thresholds``, made monotone
  (``prec[i] = max(prec[i:])``); AP_R40 = ``sum(prec[1:41]) / 40``, AP_11 =
  ``sum(prec[0:41:4]) / 11``; results in ``[0, 1]`` (the devkit prints percent).

Truncation is compared in the dtype it is stored in, so a float32 ``0.15`` (read from the
label file's ``0.15``) is not above the Easy limit 0.15. Deviations, all immaterial on valid
data: detection heights are floats (the C++ truncates
them to int; the Python port keeps floats); ground truth is processed kept objects first, then
neighbours (the devkit uses file order); a threshold with no counted detection has precision 0
(the port would divide 0 by 0).

Speed: per class and level, only images holding ground truth of the class run the greedy
matching (a Python loop over their few objects holding ``[T, D]`` state for all thresholds at
once); false positives of all other images are counted globally with one sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError
from detkd.evaluation.base import DatasetEvaluator, Detections, box_ioa, box_iou

LEVELS = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
N_SAMPLE_PTS = 41
DEFAULT_MIN_OVERLAPS = {
    "Car": 0.7, "Van": 0.7, "Truck": 0.7, "Tram": 0.7,
    "Pedestrian": 0.5, "Person_sitting": 0.5, "Cyclist": 0.5,
}
OTHER_MIN_OVERLAP = 0.5


def get_thresholds(scores: np.ndarray, num_gt: int, num_sample_pts: int = N_SAMPLE_PTS) -> np.ndarray:
    """The devkit's score thresholds: true-positive scores at (about) evenly spaced recalls."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    current, out, last = 0.0, [], len(scores) - 1
    for i, score in enumerate(scores.tolist()):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < last else l_recall
        if (r_recall - current) < (current - l_recall) and i < last:
            continue
        out.append(score)
        current += 1 / (num_sample_pts - 1.0)
    return np.asarray(out, dtype=np.float64)


def average_precision(tp: np.ndarray, fp: np.ndarray, recall_points: int) -> float:
    """AP from ``[T]`` true / false positive counts at the thresholds (see module docstring)."""
    prec = np.zeros(N_SAMPLE_PTS)
    denom = tp + fp
    prec[: len(tp)] = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0.0)
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    if recall_points == 40:
        return sum(prec[1:].tolist()) / 40
    return sum(prec[0::4].tolist()) / 11


@dataclass
class ClassImage:
    """One image's data for one class: ground truth (kept objects first, then neighbours) and
    the detections that may match it (the class's own and every low one)."""

    gt_heights: np.ndarray  # [G] float
    gt_occluded: np.ndarray  # [G] int (neighbours: 0)
    gt_truncated: np.ndarray  # [G] float, its own dtype: compared in it (neighbours: 0)
    gt_neighbor: np.ndarray  # [G] bool
    det_scores: np.ndarray  # [D]
    det_heights: np.ndarray  # [D]
    det_own: np.ndarray  # [D] bool: of the evaluated class
    det_dontcare: np.ndarray  # [D] bool: inside a DontCare region (own-class dets only)
    iou: np.ndarray  # [D, G]


def level_view(ci: ClassImage, level: int) -> tuple[np.ndarray, ...]:
    """``ignored_gt`` [G] (0/1), and for the level's detections: ``iou`` [D', G], ``scores``,
    ``ignored_det`` (0/1) and ``counted`` (a false positive when unmatched)."""
    max_trunc = ci.gt_truncated.dtype.type(MAX_TRUNCATION[level])  # float32 0.15 stays 0.15
    ignore = ((ci.gt_occluded > MAX_OCCLUSION[level]) | (ci.gt_truncated > max_trunc)
              | (ci.gt_heights <= MIN_HEIGHT[level]))
    ignored_gt = (ignore | ci.gt_neighbor).astype(np.int8)
    low = ci.det_heights < MIN_HEIGHT[level]
    keep = ci.det_own | low
    ignored_det = low[keep].astype(np.int8)
    counted = (~low & ci.det_own & ~ci.det_dontcare)[keep]
    return ignored_gt, ci.iou[keep], ci.det_scores[keep], ignored_det, counted


def tp_scores(iou: np.ndarray, scores: np.ndarray, ignored_det: np.ndarray,
              ignored_gt: np.ndarray, min_overlap: float) -> list[float]:
    """The devkit's first pass (no threshold): each object takes the highest-scoring unassigned
    detection above ``min_overlap``; returns the scores of the counted true positives."""
    assigned = np.zeros(len(scores), dtype=bool)
    out = []
    for g in range(iou.shape[1]):
        cand = ~assigned & (iou[:, g] > min_overlap)
        if not cand.any():
            continue
        j = int(np.argmax(np.where(cand, scores, -np.inf)))
        assigned[j] = True
        if ignored_gt[g] == 0 and ignored_det[j] == 0:
            out.append(float(scores[j]))
    return out


def threshold_statistics(iou: np.ndarray, scores: np.ndarray, ignored_det: np.ndarray, counted: np.ndarray,
                         ignored_gt: np.ndarray, min_overlap: float,
                         thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's second pass at all ``T`` thresholds at once. Returns ``tp`` [T] and the
    number [T] of counted detections that got assigned (so are not false positives)."""
    num_t, num_d = len(thresholds), len(scores)
    if num_t == 0 or num_d == 0:
        return np.zeros(num_t, dtype=np.int64), np.zeros(num_t, dtype=np.int64)
    usable = scores[None, :] >= thresholds[:, None]  # [T, D]
    own, low = ignored_det == 0, ignored_det == 1
    tp = np.zeros(num_t, dtype=np.int64)
    rows = np.arange(num_t)
    for g in range(iou.shape[1]):
        over = iou[:, g]
        cand = usable & (over > min_overlap)[None, :]
        cand0, cand1 = cand & own[None, :], cand & low[None, :]
        has0, has1 = cand0.any(axis=1), cand1.any(axis=1)
        j = np.where(has0, np.argmax(np.where(cand0, over[None, :], -1.0), axis=1), np.argmax(cand1, axis=1))
        has = has0 | has1
        usable[rows[has], j[has]] = False
        if ignored_gt[g] == 0:
            tp += has0
    assigned = ~usable & (scores[None, :] >= thresholds[:, None])
    return tp, (assigned & counted[None, :]).sum(axis=1)


def det_dontcare_overlap(dets: Detections, record: ImageRecord) -> np.ndarray:
    """``[N]`` max intersection-over-detection-area with the DontCare regions that apply to
    each detection (``ignore_labels`` 0, or equal to the detection's label)."""
    n, m = len(dets.scores), len(record.ignore_labels)
    if n == 0 or m == 0:
        return np.zeros(n)
    ioa = box_ioa(dets.boxes, record.ignore_boxes)
    applies = (record.ignore_labels[None, :] == 0) | (record.ignore_labels[None, :] == dets.labels[:, None])
    return np.where(applies, ioa, 0.0).max(axis=1)


def gt_heights(record: ImageRecord, kept: np.ndarray, nb: np.ndarray, gboxes: np.ndarray) -> np.ndarray:
    """Ground-truth heights in float64 from the label file's own numbers (the reader's ``height``
    and ``neighbor_heights``, as the devkit computes them in double precision from the unclipped
    box), else from the boxes: a float32 box puts about 8 % of heights of exactly 25.00 or 40.00
    px on the other side of the devkit's ``<=``."""
    own, neighbour = record.extras.get("height"), record.extras.get("neighbor_heights")
    if own is None or neighbour is None or len(own) != len(kept) or len(neighbour) != len(nb):
        return gboxes[:, 3] - gboxes[:, 1]
    return np.concatenate([np.asarray(own, dtype=np.float64)[kept], np.asarray(neighbour, dtype=np.float64)[nb]])


def class_image(record: ImageRecord, dets: Detections, dc_overlap: np.ndarray, label: int,
                min_overlap: float) -> ClassImage | None:
    """The :class:`ClassImage` of one record, or None when it has no object of the class."""
    kept = np.asarray(record.labels) == label
    nb_labels = np.asarray(record.extras.get("neighbor_labels", np.zeros(0, dtype=np.int64)))
    nb = nb_labels == label
    if not kept.any() and not nb.any():
        return None
    nb_boxes = np.reshape(record.extras.get("neighbor_boxes", np.zeros((0, 4))), (-1, 4))
    gboxes = np.concatenate([np.reshape(record.boxes, (-1, 4))[kept], nb_boxes[nb]]).astype(np.float64)
    n_kept, n_nb = int(kept.sum()), int(nb.sum())
    occluded = np.asarray(record.extras.get("occluded", np.zeros(len(kept))), dtype=np.int64)[kept]
    truncated = np.asarray(record.extras.get("truncated", np.zeros(len(kept), dtype=np.float32)))[kept]
    if not np.issubdtype(truncated.dtype, np.floating):
        truncated = truncated.astype(np.float64)
    heights = np.abs(dets.boxes[:, 3] - dets.boxes[:, 1])
    sel = (dets.labels == label) | (heights < max(MIN_HEIGHT))
    return ClassImage(
        gt_heights=gt_heights(record, kept, nb, gboxes),
        gt_occluded=np.concatenate([occluded, np.zeros(n_nb, dtype=np.int64)]),
        gt_truncated=np.concatenate([truncated, np.zeros(n_nb, dtype=truncated.dtype)]),
        gt_neighbor=np.arange(n_kept + n_nb) >= n_kept,
        det_scores=dets.scores[sel],
        det_heights=heights[sel],
        det_own=dets.labels[sel] == label,
        det_dontcare=dc_overlap[sel] > min_overlap,
        iou=box_iou(dets.boxes[sel], gboxes),
    )


class KITTIEvaluator(DatasetEvaluator):
    """KITTI 2D AP per class and difficulty (see the module docstring).

    Args:
        index: the ground truth (KITTI extras ``truncated``/``occluded`` default to 0).
        min_overlaps: IoU threshold per class name, overriding :data:`DEFAULT_MIN_OVERLAPS`
            (classes in neither: 0.5).
        recall_points: 40 (AP_R40, the benchmark's rule since 2019) or 11.

    ``evaluate()`` returns ``{class name: {"easy", "moderate", "hard": float | None}}``, None
    where a level has no valid ground truth.
    """

    family = "kitti"

    def __init__(self, index: DatasetIndex, min_overlaps: dict[str, float] | None = None,
                 recall_points: int = 40) -> None:
        if recall_points not in (11, 40):
            raise DetkdError(f"KITTI recall_points must be 40 or 11, got {recall_points}")
        self.min_overlaps = {**DEFAULT_MIN_OVERLAPS, **(min_overlaps or {})}
        self.recall_points = recall_points
        super().__init__(index)

    def min_overlap(self, name: str) -> float:
        """The IoU threshold of a class (exact name, else case-insensitive, else 0.5)."""
        if name in self.min_overlaps:
            return float(self.min_overlaps[name])
        lower = {k.lower(): v for k, v in self.min_overlaps.items()}
        return float(lower.get(name.lower(), OTHER_MIN_OVERLAP))

    def evaluate(self) -> dict[str, Any]:
        dets = self.detections()
        dc = [det_dontcare_overlap(d, r) for d, r in zip(dets, self.index.records)]
        all_scores = np.concatenate([d.scores for d in dets]) if dets else np.zeros(0)
        all_labels = np.concatenate([d.labels for d in dets]) if dets else np.zeros(0, dtype=np.int64)
        all_heights = np.concatenate([np.abs(d.boxes[:, 3] - d.boxes[:, 1]) for d in dets]) if dets else np.zeros(0)
        all_dc = np.concatenate(dc) if dc else np.zeros(0)
        holders = self._images_by_label()
        out: dict[str, Any] = {}
        for label, name in enumerate(self.index.classes, start=1):
            mo = self.min_overlap(name)
            records = self.index.records
            images = [ci for i in holders.get(label, []) if (ci := class_image(records[i], dets[i], dc[i], label, mo))]
            own = (all_labels == label) & ~(all_dc > mo)
            out[name] = {
                LEVELS[lv]: self._level_ap(images, all_scores[own & (all_heights >= MIN_HEIGHT[lv])], mo, lv)
                for lv in range(len(LEVELS))
            }
        return out

    def _images_by_label(self) -> dict[int, list[int]]:
        """Label -> positions of the records holding an object or neighbour of that class."""
        holders: dict[int, list[int]] = {}
        for i, r in enumerate(self.index.records):
            nb = np.asarray(r.extras.get("neighbor_labels", np.zeros(0, dtype=np.int64)), dtype=np.int64)
            for k in np.unique(np.concatenate([np.asarray(r.labels, dtype=np.int64), nb])).tolist():
                holders.setdefault(k, []).append(i)
        return holders

    def _level_ap(self, images: list[ClassImage], counted_scores: np.ndarray, mo: float, level: int) -> float | None:
        """AP of one class at one level; ``counted_scores`` are the scores of every detection
        that is a false positive unless matched."""
        views = [level_view(ci, level) for ci in images]
        num_valid = sum(int((v[0] == 0).sum()) for v in views)
        if num_valid == 0:
            return None
        found: list[float] = []
        for ignored_gt, iou, scores, ignored_det, _ in views:
            found += tp_scores(iou, scores, ignored_det, ignored_gt, mo)
        thresholds = get_thresholds(np.asarray(found), num_valid)
        tp = np.zeros(len(thresholds), dtype=np.int64)
        fp = len(counted_scores) - np.searchsorted(np.sort(counted_scores), thresholds, side="left")
        for ignored_gt, iou, scores, ignored_det, counted in views:
            t, assigned = threshold_statistics(iou, scores, ignored_det, counted, ignored_gt, mo, thresholds)
            tp += t
            fp -= assigned
        return average_precision(tp.astype(np.float64), fp.astype(np.float64), self.recall_points)
