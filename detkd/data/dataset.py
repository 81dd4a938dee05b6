"""The one sample contract of every detkd dataset, whatever its format on disk.

``dataset[i]`` returns ``(image, target)``:

- ``image``: float32 tensor ``[3, H, W]`` in ``[0, 1]``, RGB, at the file's own size (datasets
  never resize for a model: each model's ``GeneralizedRCNNTransform`` does);
- ``target``: ``boxes`` ``[N, 4]`` float32 xyxy absolute pixels, ``labels`` ``[N]`` int64 in
  ``1..K``, ``image_id`` (the results-file id of the image), ``difficult`` ``[N]`` bool,
  ``ignore_boxes`` ``[M, 4]`` and ``ignore_labels`` ``[M]`` (DontCare / crowd regions), and
  the format's extra per-object fields (KITTI: ``truncated``, ``occluded``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from detkd.data.images import read_rgb
from detkd.data.records import ImageRecord, LoadReport

Target = dict[str, Any]


@dataclass
class DatasetIndex:
    """Everything a reader parsed: the records, the class names and what was left out.

    ``category_ids`` maps label ``k`` (1..K) to the id a results file uses for it: the COCO
    category id for COCO data, ``k`` itself for VOC and KITTI.
    """

    format: str
    root: str
    split: str | None
    classes: tuple[str, ...]
    records: list[ImageRecord]
    report: LoadReport = field(default_factory=LoadReport)
    category_ids: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = {k: k for k in range(1, len(self.classes) + 1)}

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (background not counted)."""
        return len(self.classes)


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """A map-style dataset over a :class:`DatasetIndex`, with optional box-aware augmentation.

    Args:
        index: the parsed dataset.
        augment: a callable ``(image_uint8_hwc, record) -> (image, record)`` applied before the
            conversion to a tensor (see :mod:`detkd.data.transforms`); None for evaluation.
        unlabeled_from: records from this position on are a transfer set (no annotations; see
            :mod:`detkd.data.transfer`): every target then has ``unlabeled``, a bool scalar.
    """

    def __init__(self, index: DatasetIndex, augment: Any | None = None, unlabeled_from: int | None = None) -> None:
        self.index = index
        self.augment = augment
        self.unlabeled_from = unlabeled_from

    @property
    def records(self) -> list[ImageRecord]:
        return self.index.records

    @property
    def classes(self) -> tuple[str, ...]:
        return self.index.classes

    def __len__(self) -> int:
        return len(self.index.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        record = self.index.records[i]
        image = read_rgb(record.file_name)
        if self.augment is not None:
            image, record = self.augment(image, record)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
        target = record_to_target(record)
        if self.unlabeled_from is not None:
            target["unlabeled"] = torch.tensor(i >= self.unlabeled_from)
        return tensor, target


def record_to_target(record: ImageRecord) -> Target:
    """The torchvision-style target dict of a record (tensors, see the module docstring)."""
    target: Target = {
        "boxes": torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(record.labels, dtype=torch.int64),
        "image_id": record.image_id,
        "difficult": torch.as_tensor(record.difficult, dtype=torch.bool),
        "ignore_boxes": torch.as_tensor(record.ignore_boxes, dtype=torch.float32).reshape(-1, 4),
        "ignore_labels": torch.as_tensor(record.ignore_labels, dtype=torch.int64),
    }
    for key, value in record.extras.items():
        target[key] = torch.as_tensor(value)
    return target


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep images and targets as lists: torchvision detectors take lists of any sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)
