"""The parsed form of a detection dataset, shared by the readers and the evaluators.

Coordinates: every box in detkd is ``xyxy`` in continuous, 0-based pixel coordinates (the
image spans ``[0, width] x [0, height]``), as in torchvision. PASCAL VOC stores 1-based
inclusive pixel indices; its reader converts ``(xmin, ymin, xmax, ymax)`` to
``(xmin - 1, ymin - 1, xmax, ymax)``, so a box's area equals the VOC devkit's
``(xmax - xmin + 1) * (ymax - ymin + 1)`` and IoUs match the devkit's. KITTI and COCO are
already continuous.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

ImageId = int | str


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def empty_labels() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


@dataclass
class ImageRecord:
    """One image and its annotations, as read from disk (before any augmentation).

    Attributes:
        image_id: the id a COCO results file uses for this image: the COCO image id, or the
            file name without extension for VOC and KITTI (e.g. ``"000005"``).
        file_name: absolute path of the image.
        width, height: image size in pixels.
        boxes: ``[N, 4]`` float32 xyxy of the kept objects.
        labels: ``[N]`` int64 in ``1..K`` (0 is background).
        difficult: ``[N]`` bool, VOC's ``difficult`` flag (all False elsewhere).
        ignore_boxes: ``[M, 4]`` float32 regions that are neither positives nor negatives:
            KITTI ``DontCare`` and COCO ``iscrowd`` annotations.
        ignore_labels: ``[M]`` int64, the class of a crowd region, 0 for a region of any class
            (``DontCare``).
        extras: per-object arrays a format adds, aligned with ``boxes``; KITTI:
            ``truncated`` (float32), ``occluded`` (int64), and the neighbouring-class objects
            its evaluation ignores, ``neighbor_boxes`` ``[P, 4]`` and ``neighbor_labels`` ``[P]``
            (e.g. a Van beside class Car when Van is not a selected class).
    """

    image_id: ImageId
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=empty_boxes)
    labels: np.ndarray = field(default_factory=empty_labels)
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))
    ignore_boxes: np.ndarray = field(default_factory=empty_boxes)
    ignore_labels: np.ndarray = field(default_factory=empty_labels)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or len(self.labels) != n or len(self.difficult) != n:
            raise ValueError(f"{self.file_name}: boxes, labels and difficult must align")


@dataclass
class LoadReport:
    """What a reader did with the objects it could not keep as they were.

    ``dropped``, ``outside`` and ``clipped`` list ``"file[:line]"`` locations of boxes with zero
    or negative size (dropped), wholly outside the image (dropped) and reaching outside it
    (clipped to it); ``size_mismatch`` the images whose annotated size differs from the file's
    (the file's is used); ``skipped_classes`` counts objects of classes outside the selected
    class list, by name; ``variants`` maps a name (left out, or a class) to the class it differs
    from only in case or spaces (``wbc`` next to ``WBC``: a typo?); ``unused_map`` lists the
    ``class_map`` entries (KITTI) whose raw type no object has.
    """

    dropped: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    skipped_classes: Counter[str] = field(default_factory=Counter)
    outside: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    variants: dict[str, str] = field(default_factory=dict)
    unused_map: list[str] = field(default_factory=list)

    def summary_lines(self, dataset: str) -> list[str]:
        """One warning line per kind of problem, with counts and the first locations."""
        lines = []
        if self.size_mismatch:
            first = ", ".join(self.size_mismatch[:3]) + (", ..." if len(self.size_mismatch) > 3 else "")
            lines.append(f"{dataset}: {len(self.size_mismatch)} image(s) whose annotated size differs from the "
                         f"image file's; the file's size is used ({first})")
        for verb, where, why in (
            ("dropped", self.dropped, "with zero or negative size"),
            ("dropped", self.outside, "wholly outside the image"),
            ("clipped", self.clipped, "reaching outside the image, to the image"),
        ):
            if where:
                first = ", ".join(where[:3]) + (", ..." if len(where) > 3 else "")
                lines.append(f"{dataset}: {verb} {len(where)} box(es) {why} ({first})")
        if self.skipped_classes:
            names = ", ".join(f"{k}: {v}{self._like(k)}" for k, v in sorted(self.skipped_classes.items()))
            total = sum(self.skipped_classes.values())
            lines.append(f"{dataset}: left out {total} object(s) of classes not selected ({names})")
        twins = [f"{k!r} and {v!r}" for k, v in self.variants.items() if k not in self.skipped_classes]
        if twins:
            lines.append(f"{dataset}: classes that differ only in case or spaces: {'; '.join(twins)} (a typo?)")
        if self.unused_map:
            lines.append(f"{dataset}: class_map entries that match no type in the data: {', '.join(self.unused_map)}")
        return lines

    def _like(self, name: str) -> str:
        return f", like {self.variants[name]!r} but for case or spaces" if name in self.variants else ""
