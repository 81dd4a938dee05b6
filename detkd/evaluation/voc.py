"""PASCAL VOC detection AP (the official devkit's ``VOCevaldet.m``), vectorised.

Per class, the detections of every image are sorted by descending score (a stable sort: ties
keep image order, then the order within the image's prediction). Each detection is compared
with all ground truth of its class in its image; with ``ovmax`` the largest IoU and ``jmax``
the first object reaching it:

- ``ovmax >= iou_threshold`` and ``jmax`` is difficult: neither a true nor a false positive;
- ``ovmax >= iou_threshold`` and ``jmax`` not yet detected: true positive, ``jmax`` marked;
- otherwise (already detected, or ``ovmax`` below the threshold): false positive.

The number of positives is the number of non-difficult objects. Because marking only depends
on which object each detection's ``jmax`` is, the sequential loop reduces to "the first
detection, in score order, whose ``jmax`` is a given object is its true positive", which is
computed with a stable sort and ``np.unique`` instead of a Python loop.

Choices beyond the devkit (documented here):

- Ignore regions are treated as difficult objects of their class: COCO crowd regions
  (``ignore_labels`` = k) and KITTI ``DontCare`` regions (label 0: of every class); so are
  KITTI neighbour objects (``neighbor_boxes``, e.g. a Van for class Car).
- IoU is continuous (no ``+ 1``, see :mod:`detkd.evaluation.base`); it equals the devkit's.
- VOC2007 11-point AP samples recall at ``t = k / 10`` (k = 0..10) as correctly rounded
  doubles, so a recall of exactly 0.3 counts for ``t = 0.3`` (``np.arange(0, 1.1, 0.1)``, used
  by some Python ports, gives 0.30000000000000004 there).
- A class without non-difficult ground truth has AP ``None`` and is left out of ``mAP``;
  ``mAP`` is ``None`` when no class has any.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.evaluation.base import DatasetEvaluator, Detections, box_iou

VOC07_RECALLS = np.arange(11) / 10.0
FP, IGNORED, HIT = 0, 1, 2


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from the ``[D]`` recall / precision curve of the score-sorted detections."""
    if use_07_metric:
        total = 0.0
        for t in VOC07_RECALLS:
            above = prec[rec >= t]
            total += float(above.max()) if above.size else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def matching_gt(record: ImageRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The objects detections are matched to: ``boxes`` [G, 4], ``labels`` [G] (0 = any
    class) and ``difficult`` [G] bool; kept objects first, then ignore regions and neighbours
    (both difficult)."""
    nb_boxes = record.extras.get("neighbor_boxes", np.zeros((0, 4)))
    nb_labels = record.extras.get("neighbor_labels", np.zeros(0, dtype=np.int64))
    boxes = np.concatenate([np.reshape(b, (-1, 4)) for b in (record.boxes, record.ignore_boxes, nb_boxes)])
    labels = np.concatenate([record.labels, record.ignore_labels, nb_labels]).astype(np.int64)
    difficult = np.ones(len(labels), dtype=bool)
    difficult[: len(record.labels)] = np.asarray(record.difficult, dtype=bool)
    return boxes.astype(np.float64), labels, difficult


def match_image(dets: Detections, record: ImageRecord, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per detection: status ``[N]`` (FP, IGNORED or HIT) and the ``[N]`` index of its ``jmax``."""
    gboxes, glabels, gdiff = matching_gt(record)
    n = len(dets.scores)
    if n == 0 or len(glabels) == 0:
        return np.full(n, FP, dtype=np.int8), np.zeros(n, dtype=np.int64)
    same = (glabels[None, :] == dets.labels[:, None]) | (glabels[None, :] == 0)
    iou = np.where(same, box_iou(dets.boxes, gboxes), -np.inf)
    jmax = iou.argmax(axis=1)
    ovmax = iou[np.arange(n), jmax]
    status = np.where(ovmax >= iou_threshold, np.where(gdiff[jmax], IGNORED, HIT), FP).astype(np.int8)
    return status, jmax


def first_hits(status: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``[D]`` bool true positives of score-sorted detections: the first HIT of each object."""
    tp = np.zeros(len(status), dtype=bool)
    hits = np.flatnonzero(status == HIT)
    _, first = np.unique(keys[hits], return_index=True)
    tp[hits[first]] = True
    return tp


class VOCEvaluator(DatasetEvaluator):
    """PASCAL VOC AP per class at one IoU threshold (see the module docstring).

    Args:
        index: the ground truth.
        use_07_metric: VOC2007 11-point AP if True, else VOC2010+ all-point AP.
        iou_threshold: minimum IoU of a match (``>=``), 0.5 in VOC.

    ``evaluate()`` returns ``{"mAP": float | None, "per_class": {name: float | None}}``.
    """

    def __init__(self, index: DatasetIndex, use_07_metric: bool = False, iou_threshold: float = 0.5) -> None:
        self.use_07_metric = use_07_metric
        self.iou_threshold = iou_threshold
        self.family = "voc07" if use_07_metric else "voc"
        super().__init__(index)

    def _match_all(self) -> tuple[np.ndarray, ...]:
        """Concatenated ``scores``, ``labels``, ``status`` and global object keys of all dets."""
        parts: list[tuple[np.ndarray, ...]] = []
        offset = 0
        for record, dets in zip(self.index.records, self.detections()):
            status, jmax = match_image(dets, record, self.iou_threshold)
            parts.append((dets.scores, dets.labels, status, jmax + offset))
            offset += len(record.labels) + len(record.ignore_labels) + len(
                record.extras.get("neighbor_labels", ()))
        if not parts:
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int64)
        return tuple(np.concatenate(column) for column in zip(*parts))

    def _num_positives(self) -> np.ndarray:
        """``[K + 1]`` counts of non-difficult objects per label."""
        counts = np.zeros(self.index.num_classes + 1, dtype=np.int64)
        for record in self.index.records:
            keep = ~np.asarray(record.difficult, dtype=bool)
            np.add.at(counts, np.asarray(record.labels, dtype=np.int64)[keep], 1)
        return counts

    def evaluate(self) -> dict[str, Any]:
        scores, labels, status, keys = self._match_all()
        order = np.lexsort((-scores, labels))  # by label, then descending score; stable
        labels, status, keys = labels[order], status[order], keys[order]
        bounds = np.searchsorted(labels, np.arange(self.index.num_classes + 2))
        npos = self._num_positives()
        per_class: dict[str, float | None] = {}
        for k, name in enumerate(self.index.classes, start=1):
            if npos[k] == 0:
                per_class[name] = None
                continue
            block = slice(bounds[k], bounds[k + 1])
            st, kk = status[block], keys[block]
            counted = st != IGNORED
            tp = first_hits(st[counted], kk[counted])
            tp_c = np.cumsum(tp)
            fp_c = np.cumsum(~tp)
            rec = tp_c / npos[k]
            prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
            per_class[name] = voc_ap(rec, prec, self.use_07_metric)
        defined = [v for v in per_class.values() if v is not None]
        return {"mAP": float(np.mean(defined)) if defined else None, "per_class": per_class}
