"""COCO reader: an instances JSON file and its image folder.

Category ids map to contiguous labels ``1..K`` (sorted by category id, or in the order of the
``classes`` names given) and back through ``DatasetIndex.category_ids``. ``bbox`` is
``[x, y, w, h]`` in continuous pixels and becomes xyxy. ``iscrowd`` annotations become ignore
regions labelled with their category; a missing ``iscrowd`` is 0. Each kept object's ``area``
(COCO's own, the mask area that decides small/medium/large; the box area when the file has
none) is kept in ``extras["area"]`` for the COCO evaluation. Images without annotations are
kept; image ids are the COCO ids.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from detkd.data.common import (
    boxes_array,
    check_box,
    check_classes,
    checked_size,
    labels_array,
    parse_number,
    warn_report,
)
from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord, LoadReport
from detkd.errors import DataError, DetkdError


def read_coco(
    root: str, split: str | None = None, ann: str | None = None, classes: Sequence[str] | None = None
) -> DatasetIndex:
    """Read a COCO-style dataset.

    Args:
        root: the folder holding ``annotations/`` and the image folders.
        split: e.g. ``"val2017"``: annotations ``root/annotations/instances_<split>.json`` and
            images in ``root/<split>/`` when that folder exists (else in ``root``).
        ann: the instances JSON, when it is not ``annotations/instances_<split>.json``.
        classes: category names in label order (a subset is fine); None: every category,
            sorted by id.

    Raises:
        DataError: naming the JSON file (and the annotation) when it is malformed, or an image.
    """
    root = os.fspath(root)
    if ann is None:
        if split is None:
            raise DetkdError("COCO needs a split (annotations/instances_SPLIT.json) or an annotation file")
        ann = os.path.join(root, "annotations", f"instances_{split}.json")
    image_dir = os.path.join(root, split) if split and os.path.isdir(os.path.join(root, split)) else root
    data = _load_json(ann)
    names, category_ids = _select_categories(ann, data["categories"], check_classes(classes))
    label_of = {cat: k for k, cat in category_ids.items()}
    cat_names = {c["id"]: c["name"] for c in data["categories"]}
    by_image = _group_annotations(ann, data["annotations"], data["images"], cat_names)
    report = LoadReport()
    records = [
        _make_record(ann, image_dir, im, by_image.get(im["id"], []), label_of, cat_names, report)
        for im in data["images"]
    ]
    warn_report(report, ann, names)
    return DatasetIndex(
        format="coco", root=root, split=split, classes=names, records=records, report=report, category_ids=category_ids
    )


def _load_json(path: str) -> dict[str, Any]:
    """The parsed file, after checking its top-level lists; DataError names the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(path, "annotation file is missing") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg}, column {e.colno})", e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the annotation file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(path, f"expected a list under {key!r} (is this a COCO instances file?)")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise DataError(path, f"category {i} needs an integer 'id' and a string 'name'")
    return data


def _select_categories(
    path: str, categories: list[dict[str, Any]], classes: tuple[str, ...] | None
) -> tuple[tuple[str, ...], dict[int, int]]:
    """``(class names, {label: category id})`` for every category or the ``classes`` named."""
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(path, "two categories share an id")
    if classes is None:
        ordered = sorted(categories, key=lambda c: c["id"])
        return tuple(c["name"] for c in ordered), {k: c["id"] for k, c in enumerate(ordered, start=1)}
    by_name: dict[str, list[int]] = defaultdict(list)
    for c in categories:
        by_name[c["name"]].append(c["id"])
    missing = [n for n in classes if n not in by_name]
    if missing:
        raise DataError(path, f"no category named {', '.join(missing)} (categories: {', '.join(sorted(by_name))})")
    ambiguous = [n for n in classes if len(by_name[n]) > 1]
    if ambiguous:
        raise DataError(path, f"several categories are named {', '.join(ambiguous)}")
    return classes, {k: by_name[n][0] for k, n in enumerate(classes, start=1)}


def _group_annotations(
    path: str, annotations: list[Any], images: list[Any], cat_names: dict[int, str]
) -> dict[int, list[dict[str, Any]]]:
    """Annotations by image id, after checking each one's image, category and bbox."""
    image_ids = set()
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise DataError(path, f"image {i} needs an integer 'id' and a string 'file_name'")
        if im["id"] in image_ids:
            raise DataError(path, f"image id {im['id']} appears twice")
        image_ids.add(im["id"])
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    first_of: dict[Any, int] = {}  # annotation id -> its position: an id given twice counts its object twice
    for i, a in enumerate(annotations):
        what = f"annotation {a.get('id', i) if isinstance(a, dict) else i}"
        if not isinstance(a, dict) or a.get("image_id") not in image_ids:
            raise DataError(path, f"{what} refers to no image of the file (image_id {_get(a, 'image_id')!r})")
        ann_id = a.get("id")
        if isinstance(ann_id, (int, str)) and ann_id in first_of:
            raise DataError(path, f"annotation id {ann_id!r} appears twice (entries {first_of[ann_id]} and {i} of "
                            "'annotations'): its object would be counted twice")
        if isinstance(ann_id, (int, str)):
            first_of[ann_id] = i
        if a.get("category_id") not in cat_names:
            raise DataError(path, f"{what} has an unknown category_id {a.get('category_id')!r}")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(path, f"{what}: bbox must be [x, y, width, height], got {bbox!r}")
        a["_bbox"] = [parse_number(str(v), path, f"{what} bbox") for v in bbox]
        if a.get("iscrowd", 0) not in (0, 1):
            raise DataError(path, f"{what}: iscrowd must be 0 or 1, got {a.get('iscrowd')!r}")
        area = a.get("area")  # absent or not a positive number: the box's area is used
        a["_area"] = float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) and area > 0 else None
        grouped[a["image_id"]].append(a)
    return grouped


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _make_record(
    path: str,
    image_dir: str,
    im: dict[str, Any],
    annotations: list[dict[str, Any]],
    label_of: dict[int, int],
    cat_names: dict[int, str],
    report: LoadReport,
) -> ImageRecord:
    """The record of one image entry: kept boxes, crowd regions, left-out categories counted."""
    image = os.path.join(image_dir, im["file_name"])
    if not os.path.isfile(image):
        raise DataError(path, f"image {im['id']}: file {image} is missing")
    width, height = checked_size(report, image, _json_size(im), f"{path} (image {im['id']})")
    boxes, labels, areas, ignore, ignore_labels = [], [], [], [], []
    for a in annotations:
        cat = a["category_id"]
        if cat not in label_of:
            report.skipped_classes[cat_names[cat]] += 1
            continue
        x, y, w, h = a["_bbox"]
        box = check_box(report, (x, y, x + w, y + h), width, height, f"{path} (annotation {a.get('id')})")
        if box is None:
            continue
        if a.get("iscrowd", 0):
            ignore.append(box)
            ignore_labels.append(label_of[cat])
        else:
            boxes.append(box)
            labels.append(label_of[cat])
            areas.append(a["_area"] if a["_area"] is not None else (box[2] - box[0]) * (box[3] - box[1]))
    return ImageRecord(
        image_id=im["id"], file_name=os.path.abspath(image), width=width, height=height,
        boxes=boxes_array(boxes), labels=labels_array(labels), difficult=np.zeros(len(boxes), dtype=bool),
        ignore_boxes=boxes_array(ignore), ignore_labels=labels_array(ignore_labels),
        extras={"area": np.asarray(areas, dtype=np.float64)},
    )  # fmt: skip


def _json_size(im: dict[str, Any]) -> tuple[int, int] | None:
    """``(width, height)`` from the image entry, or None when absent or not positive integers."""
    width, height = im.get("width"), im.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return None
