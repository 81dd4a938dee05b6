"""From a format name and its options to a :class:`DatasetIndex` or a :class:`DetectionDataset`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from detkd.data.coco import read_coco
from detkd.data.dataset import DatasetIndex, DetectionDataset
from detkd.data.kitti import read_kitti
from detkd.data.records import ImageRecord, LoadReport
from detkd.data.transforms import AugmentConfig, build_augment
from detkd.data.voc import read_voc
from detkd.errors import DetkdError
from detkd.registry import Registry

READERS: Registry[Callable[..., DatasetIndex]] = Registry("dataset format")
READERS.register("voc")(read_voc)
READERS.register("kitti")(read_kitti)
READERS.register("coco")(read_coco)

# The options each format takes beyond root, split and classes.
_OPTIONS = {"voc": (), "kitti": ("class_map",), "coco": ("ann",)}


def load_index(
    fmt: str,
    root: str,
    split: str | None = None,
    ann: str | None = None,
    classes: Sequence[str] | None = None,
    class_map: Mapping[str, str] | None = None,
) -> DatasetIndex:
    """Read a dataset with the reader of ``fmt`` (``voc``, ``kitti``, ``coco``).

    ``split`` None reads every annotated image (VOC, KITTI). ``ann`` applies to COCO only and
    ``class_map`` to KITTI only; giving one to another format is an error.
    """
    reader = READERS.get(fmt)
    options = {"ann": ann, "class_map": class_map}
    for name, value in options.items():
        if value is not None and name not in _OPTIONS.get(fmt, ()):
            raise DetkdError(f"{name} does not apply to format {fmt!r} (only to {_taker(name)})")
    kwargs = {name: options[name] for name in _OPTIONS.get(fmt, ()) if options[name] is not None}
    return reader(root, split=split, classes=classes, **kwargs)


def _taker(option: str) -> str:
    return ", ".join(fmt for fmt, names in _OPTIONS.items() if option in names)


def build_dataset(
    fmt: str,
    root: str,
    split: str | None = None,
    ann: str | None = None,
    classes: Sequence[str] | None = None,
    class_map: Mapping[str, str] | None = None,
    augment: AugmentConfig | None = None,
) -> DetectionDataset:
    """The dataset of :func:`load_index`, with ``augment`` for training (None for evaluation)."""
    index = load_index(fmt, root, split=split, ann=ann, classes=classes, class_map=class_map)
    return DetectionDataset(index, augment=build_augment(augment) if augment is not None else None)


def concat_indexes(indexes: Sequence[DatasetIndex]) -> DatasetIndex:
    """One index over several of the same format (e.g. VOC 2007 + 2012 trainval).

    Classes are the union, in the first index's order then the new names sorted; labels are
    renumbered by name. Image ids must be distinct across the indexes.
    """
    if not indexes:
        raise DetkdError("no dataset to concatenate")
    fmt = indexes[0].format
    if any(ix.format != fmt for ix in indexes) or fmt == "coco":
        raise DetkdError("concatenation needs indexes of one format, VOC or KITTI (COCO ids would clash)")
    classes = list(indexes[0].classes)
    classes += sorted({c for ix in indexes[1:] for c in ix.classes} - set(classes))
    label_of = {name: k for k, name in enumerate(classes, start=1)}
    records, report, seen = [], LoadReport(), set()
    for ix in indexes:
        remap = np.array([0] + [label_of[c] for c in ix.classes], dtype=np.int64)
        for rec in ix.records:
            if rec.image_id in seen:
                raise DetkdError(f"image id {rec.image_id!r} is in two of the datasets ({ix.root})")
            seen.add(rec.image_id)
            records.append(_relabel(rec, remap))
        for name in ("dropped", "outside", "clipped", "size_mismatch"):
            getattr(report, name).extend(getattr(ix.report, name))
        report.skipped_classes.update(ix.report.skipped_classes)
    roots = "+".join(ix.root for ix in indexes)
    splits = "+".join(str(ix.split) for ix in indexes)
    return DatasetIndex(format=fmt, root=roots, split=splits, classes=tuple(classes), records=records, report=report)


def _relabel(rec: ImageRecord, remap: np.ndarray) -> ImageRecord:
    """A copy of ``rec`` with its labels (and label-valued extras) renumbered."""
    extras = dict(rec.extras)
    if "neighbor_labels" in extras:
        extras["neighbor_labels"] = remap[extras["neighbor_labels"]]
    ignore = np.where(rec.ignore_labels > 0, remap[rec.ignore_labels], 0)
    return dataclasses.replace(rec, labels=remap[rec.labels], ignore_labels=ignore, extras=extras)
