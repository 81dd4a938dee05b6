"""COCO bbox AP through pycocotools' public API (``COCO``, ``loadRes``, ``COCOeval``).

Ground truth: built in memory from the index's records, the same records every other family
scores (so COCO and VOC numbers of one run never come from different ground truth): one
annotation per object with ``area`` the annotation's own where the reader kept it (COCO's
``area``, the mask area that decides small/medium/large: ``extras["area"]``), else the box
area; VOC ``difficult`` objects get ``iscrowd=1`` (so matching them costs nothing, with COCO's
crowd rule: IoU is intersection over the detection's area); ignore regions get ``iscrowd=1``
with their class, and a region of any class (label 0, KITTI ``DontCare``) becomes one crowd
annotation per class; KITTI neighbour objects (a Van for Car) become crowd annotations of the
class they neighbour. String image ids (VOC, KITTI stems) are numbered 1..N in record order
internally; integer ids (COCO's) are kept. On COCO data whose boxes the reader kept as they are,
the numbers equal pycocotools' on the instances file (tested on coco128).

Results: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (``COCOeval.stats[:6]``), in
``[0, 1]``; ``per_class`` (AP@[.5:.95]) and ``per_class_ap50`` from the public
``eval["precision"]`` array (area "all", 100 detections, mean over entries > -1). Where
pycocotools reports -1 (undefined: no ground truth), we report ``None`` (JSON null). The text
``summarize()`` prints is captured in :attr:`COCOEvaluator.summary_text`, not printed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError
from detkd.evaluation.base import DatasetEvaluator, image_key
from detkd.evaluation.results import predictions_to_coco_json

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def defined(value: float) -> float | None:
    """pycocotools' -1 ("undefined") as None, other values as float."""
    return None if value < 0 else float(value)


def coco_image_ids(index: DatasetIndex) -> dict[Any, int]:
    """Record image id -> integer COCO image id: the id itself if all are ints, else 1..N."""
    keys = [image_key(r.image_id) for r in index.records]
    if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        return {k: k for k in keys}
    return {k: i for i, k in enumerate(keys, start=1)}


def record_annotations(record: ImageRecord, image_id: int, index: DatasetIndex) -> list[dict[str, Any]]:
    """The in-memory COCO annotations of one record (ids left for the caller to set)."""
    nb_boxes = np.reshape(record.extras.get("neighbor_boxes", np.zeros((0, 4))), (-1, 4))
    nb_labels = record.extras.get("neighbor_labels", np.zeros(0, dtype=np.int64))
    areas = record.extras.get("area")
    areas = areas if areas is not None and len(areas) == len(record.boxes) else [None] * len(record.boxes)
    all_labels = list(range(1, index.num_classes + 1))
    items = [(b, [int(k)], bool(d), a) for b, k, d, a in zip(record.boxes, record.labels, record.difficult, areas)]
    items += [(b, all_labels if int(k) == 0 else [int(k)], True, None)
              for b, k in zip(record.ignore_boxes, record.ignore_labels)]
    items += [(b, [int(k)], True, None) for b, k in zip(nb_boxes, nb_labels)]
    anns = []
    for box, labels, crowd, area in items:
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        for k in labels:
            anns.append({"image_id": image_id, "category_id": index.category_ids[k], "bbox": [x1, y1, w, h],
                         "area": float(area) if area is not None else w * h, "iscrowd": int(crowd)})
    return anns


def ground_truth_from_index(index: DatasetIndex) -> COCO:
    """A pycocotools ``COCO`` built in memory from the records (see the module docstring)."""
    ids = coco_image_ids(index)
    images, annotations = [], []
    for record in index.records:
        image_id = ids[image_key(record.image_id)]
        images.append({"id": image_id, "width": record.width, "height": record.height,
                       "file_name": os.path.basename(record.file_name)})
        annotations += record_annotations(record, image_id, index)
    for n, ann in enumerate(annotations, start=1):
        ann["id"] = n
    categories = [{"id": index.category_ids[k], "name": name} for k, name in enumerate(index.classes, start=1)]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def empty_results(gt: COCO) -> COCO:
    """A results ``COCO`` without detections (``loadRes`` refuses an empty list)."""
    dt = COCO()
    dt.dataset = {"images": copy.deepcopy(gt.dataset["images"]), "annotations": [],
                  "categories": copy.deepcopy(gt.dataset.get("categories", []))}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


class COCOEvaluator(DatasetEvaluator):
    """COCO AP with pycocotools (see the module docstring for the ground-truth choices).

    Args:
        index: the dataset; its ``category_ids`` give the results' category ids.
    """

    family = "coco"

    def __init__(self, index: DatasetIndex) -> None:
        self.summary_text = ""
        self._gt: COCO | None = None
        super().__init__(index)

    def ground_truth(self) -> COCO:
        """The pycocotools ground truth (built once from the records)."""
        if self._gt is None:
            self._gt = ground_truth_from_index(self.index)
        return self._gt

    def results_json(self) -> list[dict[str, Any]]:
        """The accumulated detections as COCO results entries with the ground truth's ids."""
        ids = coco_image_ids(self.index)
        preds = [{"image_id": r.image_id, "boxes": d.boxes, "scores": d.scores, "labels": d.labels}
                 for r, d in zip(self.index.records, self.detections())]
        return predictions_to_coco_json(preds, self.index, image_ids=ids)

    def run_cocoeval(self) -> COCOeval:
        """Run ``COCOeval`` (bbox): evaluate, accumulate, summarize (its print captured)."""
        gt = self.ground_truth()
        entries = self.results_json()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                dt = gt.loadRes(entries) if entries else empty_results(gt)
            except AssertionError:
                raise DetkdError("COCO evaluation: some result image ids are not in the ground truth") from None
            coco_eval = COCOeval(gt, dt, iouType="bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.summary_text = out.getvalue()
        return coco_eval

    def evaluate(self) -> dict[str, Any]:
        coco_eval = self.run_cocoeval()
        results: dict[str, Any] = {key: defined(v) for key, v in zip(STAT_KEYS, coco_eval.stats[:6])}
        precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
        cat_ids = list(coco_eval.params.catIds)
        per_class: dict[str, float | None] = {}
        per_class_50: dict[str, float | None] = {}
        for k, name in enumerate(self.index.classes, start=1):
            cat = self.index.category_ids[k]
            if cat not in cat_ids:
                per_class[name] = per_class_50[name] = None
                continue
            p = precision[:, :, cat_ids.index(cat), 0, -1]
            per_class[name] = mean_defined(p)
            per_class_50[name] = mean_defined(p[0])
        results["per_class"] = per_class
        results["per_class_ap50"] = per_class_50
        return results


def mean_defined(values: np.ndarray) -> float | None:
    """Mean over the entries > -1 (None if there are none)."""
    values = values[values > -1]
    return float(values.mean()) if values.size else None
