"""KITTI 2D object reader: ``image_2/`` and ``label_2/*.txt`` (15 fields a line).

A label line is ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y``; boxes are
already continuous pixel xyxy. ``DontCare`` regions become ignore regions (label 0);
truncation and occlusion are kept per object (``extras["truncated"]``, ``extras["occluded"]``)
for KITTI's difficulty levels. A raw type is first renamed by ``class_map`` (e.g.
``Van -> Car``); objects whose class is not selected are left out and counted, and those KITTI's
evaluation treats as a neighbouring class (``Van`` beside ``Car``, ``Person_sitting`` beside
``Pedestrian``) are kept apart as ``extras["neighbor_boxes"]`` / ``extras["neighbor_labels"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detkd.data.common import (
    boxes_array,
    check_box,
    check_classes,
    labels_array,
    list_stems,
    parse_number,
    read_list_file,
    warn_report,
)
from detkd.data.dataset import DatasetIndex
from detkd.data.images import IMAGE_EXTENSIONS, image_size
from detkd.data.records import ImageRecord, LoadReport
from detkd.errors import DataError

KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
DONT_CARE = "DontCare"
# Raw type -> the class KITTI's evaluation ignores it beside (neither a hit nor a miss).
NEIGHBOR_CLASSES = {"Van": "Car", "Person_sitting": "Pedestrian"}
NUM_FIELDS = 15


@dataclass
class KittiObject:
    """One parsed label line."""

    line: int
    type: str
    truncated: float
    occluded: int
    box: tuple[float, float, float, float]


def read_kitti(
    root: str,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    class_map: Mapping[str, str] | None = None,
) -> DatasetIndex:
    """Read a KITTI 2D object folder.

    Args:
        root: the folder holding ``image_2/`` and ``label_2/``.
        split: None reads every ``label_2/*.txt``; a name reads the stems listed in
            ``root/ImageSets/<name>.txt`` (or ``root/<name>.txt``); a path names a file list.
        classes: the class names in label order, e.g. ``("Car", "Pedestrian", "Cyclist")``;
            None: the (mapped) types found in the data, sorted, ``DontCare`` excepted.
        class_map: raw type -> class name, e.g. ``{"Van": "Car"}``.

    Raises:
        DataError: naming the file and line of a malformed label, or a missing file.
    """
    root = os.fspath(root)
    selected = check_classes(classes)
    rename = dict(class_map or {})
    label_dir, image_dir = os.path.join(root, "label_2"), os.path.join(root, "image_2")
    entries = _split_entries(root, label_dir, split)
    images = list_stems(image_dir, IMAGE_EXTENSIONS)
    parsed = [(stem, path, _image_path(image_dir, stem, path, images), _parse_labels(path)) for stem, path in entries]
    if selected is None:
        found = {rename.get(o.type, o.type) for *_, objects in parsed for o in objects}
        selected = tuple(sorted(found - {DONT_CARE}))
    label_of = {name: k for k, name in enumerate(selected, start=1)}
    report = LoadReport()
    records = [_make_record(stem, path, image, objs, label_of, rename, report) for stem, path, image, objs in parsed]
    report.unused_map = sorted(set(rename) - {o.type for *_, objects in parsed for o in objects})
    warn_report(report, root, selected)
    return DatasetIndex(format="kitti", root=root, split=split, classes=selected, records=records, report=report)


def split_file(root: str, split: str) -> str:
    """The file list of ``split``: ``root/ImageSets/<split>.txt``, ``root/<split>.txt`` or a path."""
    candidates = [os.path.join(root, "ImageSets", f"{split}.txt"), os.path.join(root, f"{split}.txt"), split]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError(root, f"no file list for split {split!r} (tried {', '.join(candidates)})")


def _split_entries(root: str, label_dir: str, split: str | None) -> list[tuple[str, str]]:
    """``(stem, label path)`` of the split, checking each listed label file exists."""
    if split is None:
        return [(s, os.path.join(label_dir, s + ".txt")) for s in sorted(list_stems(label_dir, (".txt",)))]
    list_path = split_file(root, split)
    entries = []
    for line, stem in read_list_file(list_path):
        path = os.path.join(label_dir, stem + ".txt")
        if not os.path.isfile(path):
            raise DataError(list_path, f"lists {stem} but its label file {path} is missing", line)
        entries.append((stem, path))
    return entries


def _image_path(image_dir: str, stem: str, label_path: str, images: dict[str, str]) -> str:
    if stem not in images:
        raise DataError(label_path, f"no image {stem}.{{png,jpg,jpeg,bmp}} in {image_dir}")
    return os.path.join(image_dir, images[stem])


def _parse_labels(path: str) -> list[KittiObject]:
    """Every object of a label file (a UTF-8 byte-order mark is not part of the first type); a
    DataError names the file and line of a bad one."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(path, f"cannot read the label file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(path, "the label file is not UTF-8 text") from None
    return [_parse_line(path, n, text.split()) for n, text in enumerate(lines, start=1) if text.strip()]


def _parse_line(path: str, line: int, fields: list[str]) -> KittiObject:
    if len(fields) != NUM_FIELDS:
        hint = " (a 16th field is a detection score: this looks like a results file)" if len(fields) == 16 else ""
        raise DataError(path, f"expected {NUM_FIELDS} fields (type, truncated, occluded, alpha, "
                        f"x1 y1 x2 y2, h w l, x y z, rotation_y), found {len(fields)}{hint}", line)  # fmt: skip
    names = ("truncated", "occluded", "alpha", "x1", "y1", "x2", "y2", "h", "w", "l", "x", "y", "z", "rotation_y")
    values = [parse_number(v, path, name, line) for name, v in zip(names, fields[1:])]
    if values[1] != int(values[1]):
        raise DataError(path, f"occluded must be an integer (0..3, -1 for DontCare), got {fields[2]!r}", line)
    box = (values[3], values[4], values[5], values[6])
    return KittiObject(line=line, type=fields[0], truncated=values[0], occluded=int(values[1]), box=box)


def _make_record(
    stem: str,
    path: str,
    image: str,
    objects: list[KittiObject],
    label_of: dict[str, int],
    rename: dict[str, str],
    report: LoadReport,
) -> ImageRecord:
    """The record of one label file: kept objects, DontCare regions and neighbour objects."""
    width, height = image_size(image)
    kept: dict[str, list] = {"boxes": [], "labels": [], "truncated": [], "occluded": [], "height": []}
    ignore: list = []
    neighbors: dict[str, list] = {"boxes": [], "labels": [], "height": []}
    for obj in objects:
        name = rename.get(obj.type, obj.type)
        if DONT_CARE in (obj.type, name):  # class_map may send a type to DontCare (e.g. Misc)
            _add(ignore, None, check_box(report, obj.box, width, height, f"{path}:{obj.line}"))
        elif name in label_of:
            box = check_box(report, obj.box, width, height, f"{path}:{obj.line}")
            if _add(kept["boxes"], kept["labels"], box, label_of[name]):
                kept["truncated"].append(obj.truncated)
                kept["occluded"].append(obj.occluded)
                kept["height"].append(obj.box[3] - obj.box[1])
        else:
            report.skipped_classes[obj.type] += 1
            neighbor = NEIGHBOR_CLASSES.get(obj.type)
            if neighbor in label_of:
                box = check_box(report, obj.box, width, height, f"{path}:{obj.line}")
                if _add(neighbors["boxes"], neighbors["labels"], box, label_of[neighbor]):
                    neighbors["height"].append(obj.box[3] - obj.box[1])
    return ImageRecord(
        image_id=stem, file_name=os.path.abspath(image), width=width, height=height,
        boxes=boxes_array(kept["boxes"]), labels=labels_array(kept["labels"]),
        difficult=np.zeros(len(kept["boxes"]), dtype=bool),
        ignore_boxes=boxes_array(ignore), ignore_labels=np.zeros(len(ignore), dtype=np.int64),
        extras={
            "truncated": np.asarray(kept["truncated"], dtype=np.float32),
            "occluded": np.asarray(kept["occluded"], dtype=np.int64),
            "height": np.asarray(kept["height"], dtype=np.float64),
            "neighbor_boxes": boxes_array(neighbors["boxes"]),
            "neighbor_labels": labels_array(neighbors["labels"]),
            "neighbor_heights": np.asarray(neighbors["height"], dtype=np.float64),
        },
    )  # fmt: skip


def _add(boxes: list, labels: list | None, box: tuple | None, label: int = 0) -> bool:
    """Append a checked box (and its label); False when the check dropped it."""
    if box is None:
        return False
    boxes.append(box)
    if labels is not None:
        labels.append(label)
    return True
