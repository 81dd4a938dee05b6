"""Transfer sets: images without labels that a teacher annotates for its student.

Hinton et al. (2015, section 2) distil on a *transfer set*, which need not be labelled: the
teacher's outputs are the targets. detkd reads one from ``data.unlabeled`` (a split of the
dataset, a folder of images, or more images of the embedded dataset) as records without boxes;
the distillation task gives them the teacher's detections as boxes while it trains
(:func:`detkd.distill.teacher.teacher_detections`). This module only reads images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from detkd.data.dataset import DatasetIndex
from detkd.data.images import IMAGE_EXTENSIONS, image_size
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError


def folder_index(folder: str, classes: Sequence[str]) -> DatasetIndex:
    """Every image directly in ``folder`` (name order), as records without boxes."""
    path = os.path.expanduser(folder)
    if not os.path.isdir(path):
        raise DetkdError(f"data.unlabeled.folder: {path}: no such folder")
    names = sorted(n for n in os.listdir(path) if n.endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DetkdError(f"data.unlabeled.folder: {path} holds no images ({', '.join(IMAGE_EXTENSIONS[:5])})")
    records = []
    for name in names:
        file_name = os.path.join(os.path.abspath(path), name)
        width, height = image_size(file_name)
        records.append(ImageRecord(os.path.splitext(name)[0], file_name, width, height))
    return DatasetIndex("folder", path, None, tuple(classes), records)


def without_labels(index: DatasetIndex, exclude: Iterable[str]) -> DatasetIndex:
    """``index``'s images without their annotations, leaving out the files in ``exclude`` (the
    labelled split's: an image is labelled or in the transfer set, never both)."""
    taken = {os.path.abspath(f) for f in exclude}
    records = [ImageRecord(r.image_id, r.file_name, r.width, r.height) for r in index.records
               if os.path.abspath(r.file_name) not in taken]
    return DatasetIndex(index.format, index.root, index.split, index.classes, records)


def synth_extension(images: int, wanted: int, is_train: Callable[[int], bool]) -> int:
    """How many images the embedded dataset must have so that ``wanted`` training images follow
    the first ``images`` (``is_train(i)``: image ``i`` is in the training split)."""
    total, found = images, 0
    while found < wanted:
        found += bool(is_train(total))
        total += 1
    return total
