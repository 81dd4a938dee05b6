"""Standard COCO results files: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.

Ids:

- COCO data: the dataset's own image ids and category ids.
- VOC / KITTI data: ``image_id`` is the record's image id, the file name without extension as
  a JSON string (``"000005"``); a JSON integer is accepted only when its decimal form is exactly
  an image id (``5`` matches ``"5"``, never ``"000005"``: zero-padding is not guessed).
  ``category_id`` is the label ``1..K`` (``index.category_ids`` maps label -> id for every
  format).

Loaded predictions have one entry per record of the index, in record order, with ``boxes``
``[N, 4]`` float64 xyxy, ``scores`` ``[N]`` float64 (the file's numbers, not rounded to
float32, so that COCO metrics on a loaded file equal pycocotools' on the file) and ``labels``
``[N]`` int64, in file order; images without detections get empty arrays. Problems raise :class:`DataError` naming
the file and the (0-based) entry, e.g. ``dets.json: entry 17: unknown image_id 'abc'``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from detkd.data.dataset import DatasetIndex
from detkd.errors import DataError, DetkdError
from detkd.evaluation.base import check_prediction, image_key
from detkd.utils.io import atomic_write

ENTRY_KEYS = ("image_id", "category_id", "bbox", "score")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _image_lookup(index: DatasetIndex) -> dict[Any, int]:
    return {image_key(r.image_id): i for i, r in enumerate(index.records)}


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(path, "results file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the results file: {e}") from None


def _parse_entry(entry: Any, images: dict[Any, int], labels: dict[int, int]) -> tuple[int, list[float], float, int]:
    """``(record position, [x1, y1, x2, y2], score, label)`` of one entry; ValueError if bad."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, got {type(entry).__name__}")
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(repr(k) for k in missing)}")
    image_id, category_id = entry["image_id"], entry["category_id"]
    pos = None
    if isinstance(image_id, str) or (isinstance(image_id, int) and not isinstance(image_id, bool)):
        pos = images.get(image_id)
        if pos is None and isinstance(image_id, int):
            pos = images.get(str(image_id))
    if pos is None:
        raise ValueError(f"unknown image_id {image_id!r}")
    if not (isinstance(category_id, int) and not isinstance(category_id, bool)) or category_id not in labels:
        raise ValueError(f"unknown category_id {category_id!r}")
    bbox, score = entry["bbox"], entry["score"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise ValueError(f"bbox must be a list of 4 numbers [x, y, width, height], got {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        raise ValueError(f"bbox has a non-finite number: {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"bbox has a negative {'width' if bbox[2] < 0 else 'height'}: {bbox!r}")
    if not _is_number(score) or not math.isfinite(score):
        raise ValueError(f"score must be a finite number, got {score!r}")
    x, y, w, h = (float(v) for v in bbox)
    return pos, [x, y, x + w, y + h], float(score), labels[category_id]


def load_results(path: str | os.PathLike[str], index: DatasetIndex) -> list[dict[str, Any]]:
    """Read a COCO results JSON into per-image prediction dicts (see the module docstring)."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of detections, got a {type(data).__name__}")
    images = _image_lookup(index)
    labels = {cat: k for k, cat in index.category_ids.items()}
    per_image: list[list[tuple[list[float], float, int]]] = [[] for _ in index.records]
    for i, entry in enumerate(data):
        try:
            pos, box, score, label = _parse_entry(entry, images, labels)
        except ValueError as e:
            raise DataError(path, f"entry {i}: {e}") from None
        per_image[pos].append((box, score, label))
    return [_prediction(record.image_id, dets) for record, dets in zip(index.records, per_image)]


def _prediction(image_id: Any, dets: list[tuple[list[float], float, int]]) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "boxes": np.array([d[0] for d in dets], dtype=np.float64).reshape(-1, 4),
        "scores": np.array([d[1] for d in dets], dtype=np.float64),
        "labels": np.array([d[2] for d in dets], dtype=np.int64),
    }


def predictions_to_coco_json(predictions: Sequence[dict[str, Any]], index: DatasetIndex,
                             image_ids: dict[Any, int] | None = None) -> list[dict[str, Any]]:
    """Per-image prediction dicts -> COCO results entries (``bbox`` as ``[x, y, w, h]``).

    ``image_ids`` optionally maps the records' image ids to the ids to write (the COCO
    evaluator uses it for in-memory ground truth with string ids). Raises DetkdError on
    malformed predictions or image ids not in the index.
    """
    known = _image_lookup(index)
    out: list[dict[str, Any]] = []
    for pred in predictions:
        key = image_key(pred.get("image_id") if isinstance(pred, dict) else None)
        dets = check_prediction(pred, index.num_classes, f"prediction for image_id {key!r}")
        if key not in known:
            raise DetkdError(f"prediction for image_id {key!r}: unknown image_id (not in the dataset)")
        written = image_ids[key] if image_ids is not None else index.records[known[key]].image_id
        xywh = dets.boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        cats = [index.category_ids[int(k)] for k in dets.labels]
        out.extend(
            {"image_id": written, "category_id": c, "bbox": b, "score": s}
            for c, b, s in zip(cats, xywh.tolist(), dets.scores.tolist())
        )
    return out


def write_results(predictions: Sequence[dict[str, Any]], index: DatasetIndex, path: str | os.PathLike[str]) -> None:
    """Write predictions as a COCO results JSON, atomically (a temporary file, then rename)."""
    entries = predictions_to_coco_json(predictions, index)
    try:
        with atomic_write(path) as f:
            json.dump(entries, f)
    except OSError as e:
        raise DataError(path, f"cannot write the results file: {e}") from None
