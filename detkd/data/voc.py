"""PASCAL VOC reader: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

Boxes are converted from VOC's 1-based inclusive pixel indices to detkd's continuous xyxy
(see :mod:`detkd.data.records`): ``(xmin - 1, ymin - 1, xmax, ymax)``. A box whose raw
``xmax <= xmin`` or ``ymax <= ymin`` (a point or an inverted box) is dropped and reported;
one reaching outside the image is clipped to it and reported. ``difficult`` objects are
kept and flagged.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from detkd.data.common import (
    boxes_array,
    check_box,
    check_classes,
    checked_size,
    labels_array,
    list_stems,
    parse_number,
    read_list_file,
    warn_report,
)
from detkd.data.dataset import DatasetIndex
from detkd.data.images import IMAGE_EXTENSIONS
from detkd.data.records import ImageRecord, LoadReport
from detkd.errors import DataError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_COORDS = ("xmin", "ymin", "xmax", "ymax")


def read_voc(root: str, split: str | None = "trainval", classes: Sequence[str] | None = None) -> DatasetIndex:
    """Read a VOC2007-style folder.

    Args:
        root: the folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: ``ImageSets/Main/<split>.txt``; None reads every ``Annotations/*.xml``.
        classes: the class names in label order (``VOC_CLASSES`` for the real VOC); objects of
            other classes are left out and counted. None: the names found in the data, sorted.

    Raises:
        DataError: naming the file (and line) of a missing or malformed annotation or image.
    """
    root = os.fspath(root)
    selected = check_classes(classes)
    ann_dir = os.path.join(root, "Annotations")
    entries = _split_entries(root, ann_dir, split)
    images = list_stems(os.path.join(root, "JPEGImages"), IMAGE_EXTENSIONS)
    parsed = [_parse_xml(path, root, images) for path in entries]
    if selected is None:
        selected = tuple(sorted({obj[0] for _, _, objects in parsed for obj in objects}))
    label_of = {name: k for k, name in enumerate(selected, start=1)}
    report = LoadReport()
    records = [_make_record(head, size, objects, label_of, report) for head, size, objects in parsed]
    warn_report(report, root, selected)
    return DatasetIndex(format="voc", root=root, split=split, classes=selected, records=records, report=report)


def _split_entries(root: str, ann_dir: str, split: str | None) -> list[str]:
    """The annotation files of the split, checking each one the split file lists exists."""
    if split is None:
        stems = sorted(list_stems(ann_dir, (".xml",)))
        return [os.path.join(ann_dir, s + ".xml") for s in stems]
    list_path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(list_path):
        raise DataError(list_path, f"split file for split {split!r} is missing")
    paths = []
    for line, stem in read_list_file(list_path):
        path = os.path.join(ann_dir, stem + ".xml")
        if not os.path.isfile(path):
            raise DataError(list_path, f"lists {stem} but its annotation {path} is missing", line)
        paths.append(path)
    return paths


def _parse_xml(
    path: str, root: str, images: dict[str, str]
) -> tuple[tuple[str, str, str], tuple[int, int] | None, list]:
    """``((stem, xml path, image path), (w, h) or None, [(name, raw box, difficult), ...])``."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise DataError(path, f"malformed XML ({e})", e.position[0]) from None
    except OSError as e:
        raise DataError(path, f"cannot read the annotation ({e.strerror or e})") from None
    node = tree.getroot()
    if node.tag != "annotation":
        raise DataError(path, f"expected an <annotation> root element, found <{node.tag}>")
    stem = os.path.splitext(os.path.basename(path))[0]
    image = _image_path(path, root, stem, node.findtext("filename"), images)
    objects = [_parse_object(path, i, obj) for i, obj in enumerate(node.iter("object"), start=1)]
    return (stem, path, image), _xml_size(path, node), objects


def _image_path(path: str, root: str, stem: str, filename: str | None, images: dict[str, str]) -> str:
    """The image of an annotation: its ``<filename>`` in JPEGImages, else the same stem."""
    folder = os.path.join(root, "JPEGImages")
    name = os.path.basename((filename or "").strip())
    if name and images.get(os.path.splitext(name)[0]) == name:
        return os.path.join(folder, name)
    if stem in images:
        return os.path.join(folder, images[stem])
    raise DataError(path, f"no image {stem}.{{jpg,jpeg,png,bmp}} in {folder}")


def _xml_size(path: str, node: ET.Element) -> tuple[int, int] | None:
    """``(width, height)`` from ``<size>``, or None when absent or not positive integers."""
    try:
        width = int(float(node.findtext("size/width") or ""))
        height = int(float(node.findtext("size/height") or ""))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _parse_object(path: str, index: int, obj: ET.Element) -> tuple[str, tuple[float, ...], bool]:
    """``(name, raw (xmin, ymin, xmax, ymax), difficult)`` of the ``index``-th ``<object>``."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DataError(path, f"object {index} has no <name>")
    box = obj.find("bndbox")
    if box is None:
        raise DataError(path, f"object {index} ({name}) has no <bndbox>")
    raw = tuple(parse_number(box.findtext(k), path, f"object {index} ({name}) <{k}>") for k in _COORDS)
    difficult = (obj.findtext("difficult") or "0").strip()
    if difficult not in ("0", "1"):
        raise DataError(path, f"object {index} ({name}) <difficult> must be 0 or 1, got {difficult!r}")
    return name, raw, difficult == "1"


def _make_record(
    head: tuple[str, str, str],
    size: tuple[int, int] | None,
    objects: list,
    label_of: dict[str, int],
    report: LoadReport,
) -> ImageRecord:
    """The record of one parsed annotation: selected classes kept, boxes checked."""
    stem, path, image = head
    width, height = checked_size(report, image, size, path)
    boxes, labels, difficult = [], [], []
    for index, (name, raw, diff) in enumerate(objects, start=1):
        if name not in label_of:
            report.skipped_classes[name] += 1
            continue
        xmin, ymin, xmax, ymax = raw
        if xmax <= xmin or ymax <= ymin:  # a point or an inverted box in VOC's inclusive indices
            report.dropped.append(f"{path} (object {index})")
            continue
        box = check_box(report, (xmin - 1, ymin - 1, xmax, ymax), width, height, f"{path} (object {index})")
        if box is not None:
            boxes.append(box)
            labels.append(label_of[name])
            difficult.append(diff)
    return ImageRecord(
        image_id=stem, file_name=os.path.abspath(image), width=width, height=height,
        boxes=boxes_array(boxes), labels=labels_array(labels), difficult=np.asarray(difficult, dtype=bool),
    )  # fmt: skip
