"""The evaluator protocol shared by every metric family, and the box-overlap helpers.

An evaluator is built on a :class:`~detkd.data.dataset.DatasetIndex` (the ground truth), fed
per-image predictions in batches with :meth:`DatasetEvaluator.process`, and asked for one
metric family's numbers with :meth:`DatasetEvaluator.evaluate`.

A prediction is a dict ``{"image_id": id, "boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}``
(torch tensors or numpy arrays; labels in ``1..K``). Boxes are continuous 0-based pixel
coordinates, like the ground truth (see :mod:`detkd.data.records`).

IoU convention: continuous, ``area = (x2 - x1) * (y2 - y1)`` with no ``+ 1``. Because the VOC
reader turns the devkit's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` into
``(xmin - 1, ymin - 1, xmax, ymax)``, this equals the devkit's ``+ 1`` IoU on its boxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from detkd.data.dataset import DatasetIndex
from detkd.errors import DetkdError

PREDICTION_KEYS = ("image_id", "boxes", "scores", "labels")


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` xyxy -> ``[N]`` areas (0 for degenerate boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, 4]`` and ``[M, 4]`` xyxy -> ``[N, M]`` intersection areas (float64)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(iw, 0, None) * np.clip(ih, 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, 4]`` and ``[M, 4]`` xyxy -> ``[N, M]`` IoU (float64; 0 where the union is 0)."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_ioa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, 4]`` and ``[M, 4]`` -> ``[N, M]`` intersection over the area of ``a`` (0 if empty)."""
    inter = box_intersection(a, b)
    area = box_area(a)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class Detections:
    """One image's predictions as numpy: ``boxes`` [N, 4] float64, ``scores`` [N] float64,
    ``labels`` [N] int64."""

    __slots__ = ("boxes", "scores", "labels")

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        self.boxes = boxes
        self.scores = scores
        self.labels = labels

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )


def image_key(image_id: Any) -> Any:
    """A hashable plain-Python image id (unwraps 0-d tensors and numpy scalars)."""
    if hasattr(image_id, "item") and getattr(image_id, "ndim", 0) == 0:
        image_id = image_id.item()
    return image_id


def check_prediction(pred: Any, num_classes: int, where: str) -> Detections:
    """Validate one prediction dict and convert it to :class:`Detections` (DetkdError if bad)."""
    if not isinstance(pred, dict):
        raise DetkdError(f"{where}: a prediction must be a dict, got {type(pred).__name__}")
    missing = [k for k in PREDICTION_KEYS if k not in pred]
    if missing:
        raise DetkdError(f"{where}: prediction lacks key(s) {', '.join(missing)}")
    boxes = to_numpy(pred["boxes"]).astype(np.float64)
    scores = to_numpy(pred["scores"]).astype(np.float64).reshape(-1)
    labels = to_numpy(pred["labels"])
    n = len(scores)
    if boxes.size == 0 and n == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != n or labels.shape != (n,):
        raise DetkdError(
            f"{where}: boxes must be [N, 4], scores and labels [N]; got shapes "
            f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    if n and not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise DetkdError(f"{where}: boxes and scores must be finite numbers")
    if n and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 1 or labels.max() > num_classes):
        raise DetkdError(f"{where}: labels must be integers in 1..{num_classes}")
    return Detections(boxes, scores, labels.astype(np.int64))


class DatasetEvaluator:
    """Base evaluator: accumulates predictions per image of ``index``; subclasses score them.

    ``process`` may be called many times (one batch at a time). Two predictions for the same
    image are concatenated. Images without any prediction count as having no detections.
    """

    family = "base"

    def __init__(self, index: DatasetIndex) -> None:
        self.index = index
        self._position = {image_key(r.image_id): i for i, r in enumerate(index.records)}
        self.reset()

    def reset(self) -> None:
        """Forget every prediction processed so far."""
        self._parts: dict[int, list[Detections]] = {}

    def process(self, predictions: Iterable[dict[str, Any]]) -> None:
        """Accumulate per-image prediction dicts (see the module docstring)."""
        for pred in predictions:
            image_id = image_key(pred.get("image_id") if isinstance(pred, dict) else None)
            where = f"prediction for image_id {image_id!r}"
            dets = check_prediction(pred, self.index.num_classes, where)
            pos = self._position.get(image_id)
            if pos is None and isinstance(image_id, int) and not isinstance(image_id, bool):
                pos = self._position.get(str(image_id))
            if pos is None:
                raise DetkdError(f"{where}: unknown image_id (not an image of the {self.index.format} dataset)")
            self._parts.setdefault(pos, []).append(dets)

    def detections(self) -> list[Detections]:
        """The accumulated detections, one entry per record of the index, in record order."""
        return [Detections.concat(self._parts[i]) if i in self._parts else Detections.empty()
                for i in range(len(self.index.records))]

    def evaluate(self) -> dict[str, Any]:
        """The metric family's results (a JSON-serialisable dict)."""
        raise NotImplementedError
