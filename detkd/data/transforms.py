"""Box-aware training augmentation with albumentations; off for evaluation.

``build_augment(cfg)`` returns a callable ``(image_uint8_hwc, record) -> (image, record)`` for
:class:`~detkd.data.dataset.DetectionDataset`. It never resizes for a model (each model's own
transform does), so *scale jitter* changes the scale of the objects relative to a canvas of
unchanged size: an ``A.Affine`` zoom about the centre with the output shape kept (zoom out:
borders filled; zoom in: the edges cropped). Every box group — kept boxes, ignore regions and
KITTI's neighbour boxes — goes through the same transform, with an index label field so that
labels, ``difficult`` and the per-object extras stay aligned. Boxes leaving the image are
clipped; those that become degenerate or almost invisible (``min_visibility``) are dropped.

Randomness: albumentations 2 ignores the global numpy/random state; each ``Compose`` has its
own generators, seeded by its ``seed`` argument. The callable seeds its ``Compose`` with
``cfg.seed`` in the main process and, in a DataLoader worker, reseeds it from
``(cfg.seed, worker seed)``: the worker seed is ``base_seed + worker_id`` where ``base_seed``
comes from torch's generator, so workers draw different augmentations, every epoch draws new
ones, and a run is reproducible under ``torch.manual_seed``.
A training run wraps it in :class:`EpochSeededAugment`, which reseeds it for every sample from
``(seed, epoch, image_id)``, so a resumed run augments as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch.utils.data

from detkd.data.records import ImageRecord
from detkd.errors import DetkdError

AugmentFn = Callable[[np.ndarray, ImageRecord], tuple[np.ndarray, ImageRecord]]

# extras holding a box group of their own (key of the boxes -> keys aligned with them); every
# other extras array is aligned with the record's kept boxes.
BOX_GROUPS: dict[str, tuple[str, ...]] = {"neighbor_boxes": ("neighbor_labels", "neighbor_heights")}


@dataclass
class AugmentConfig:
    """Training augmentation settings (all off but the flip by default).

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip (for data without an up, e.g. microscopy).
        scale_jitter: ``(lo, hi)`` range of the object-scale factor (canvas size kept), or None.
        scale_p: probability of applying the scale jitter.
        brightness, contrast, saturation: maximum relative change (0.2: factor in [0.8, 1.2]).
        hue: maximum hue shift, as a fraction of the hue circle (at most 0.5).
        photometric_p: probability of applying the colour changes.
        min_visibility: a box keeping less than this fraction of its area is dropped.
        min_box_size: a box narrower or lower than this (pixels) after the transform is dropped.
        fill: RGB value of the border that a zoom out uncovers.
        seed: seed of the augmentation's random generators (see the module docstring).
    """

    hflip: float = 0.5
    vflip: float = 0.0
    scale_jitter: tuple[float, float] | None = None
    scale_p: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    photometric_p: float = 0.5
    min_visibility: float = 0.1
    min_box_size: float = 1.0
    fill: tuple[int, int, int] = (124, 116, 104)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "scale_p", "photometric_p", "min_visibility"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DetkdError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "hue", "min_box_size"):
            if getattr(self, name) < 0:
                raise DetkdError(f"augment.{name} must not be negative, got {getattr(self, name)}")
        if self.hue > 0.5:
            raise DetkdError(f"augment.hue must be at most 0.5, got {self.hue}")
        if self.scale_jitter is not None:
            if len(self.scale_jitter) != 2 or not 0 < self.scale_jitter[0] <= self.scale_jitter[1]:
                raise DetkdError(f"augment.scale_jitter must be [lo, hi] with 0 < lo <= hi, got {self.scale_jitter}")
            self.scale_jitter = (float(self.scale_jitter[0]), float(self.scale_jitter[1]))

    @classmethod
    def from_section(cls, section: Any) -> AugmentConfig:
        """From any object (e.g. the config's ``AugmentSection``) or mapping with these field names."""
        get = section.get if isinstance(section, dict) else lambda k, d: getattr(section, k, d)
        values = {f.name: get(f.name, f.default) for f in dataclasses.fields(cls)}
        if values["scale_jitter"] is not None:
            values["scale_jitter"] = tuple(values["scale_jitter"])
        values["fill"] = tuple(values["fill"])
        return cls(**values)

    @property
    def photometric(self) -> bool:
        """Whether any colour change is on."""
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))


def build_augment(cfg: AugmentConfig) -> AugmentFn:
    """The augmentation callable ``(image_uint8_hwc, record) -> (image, new record)`` of ``cfg``."""
    return Augment(cfg)


def build_pipeline(cfg: AugmentConfig) -> A.Compose:
    """The albumentations ``Compose`` of ``cfg``, with boxes in pixel xyxy and an index label field."""
    steps: list[A.BasicTransform] = []
    if cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.vflip > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip))
    if cfg.scale_jitter is not None and cfg.scale_p > 0:
        steps.append(A.Affine(scale=cfg.scale_jitter, keep_ratio=True, fit_output=False, interpolation=cv2.INTER_LINEAR,
                              border_mode=cv2.BORDER_CONSTANT, fill=cfg.fill, p=cfg.scale_p))  # fmt: skip
    geometric = bool(steps)
    if cfg.photometric and cfg.photometric_p > 0:
        b, c, s, h = cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue
        steps.append(A.ColorJitter(brightness=(max(0.0, 1 - b), 1 + b), contrast=(max(0.0, 1 - c), 1 + c),
                                   saturation=(max(0.0, 1 - s), 1 + s), hue=(-h, h), p=cfg.photometric_p))  # fmt: skip
    if not geometric:
        return A.Compose(steps, seed=cfg.seed)  # no geometric change: the boxes stay as they are
    bbox_params = A.BboxParams(
        format="pascal_voc", label_fields=["box_index"], clip=True, min_visibility=cfg.min_visibility,
        min_width=cfg.min_box_size, min_height=cfg.min_box_size,
    )  # fmt: skip
    return A.Compose(steps, bbox_params=bbox_params, seed=cfg.seed)


class Augment:
    """The callable :func:`build_augment` returns (picklable, reseeded in DataLoader workers)."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.pipeline = build_pipeline(cfg)
        self._worker_seed: int | None = None

    def __call__(self, image: np.ndarray, record: ImageRecord) -> tuple[np.ndarray, ImageRecord]:
        self._reseed_in_worker()
        if "bboxes" not in self.pipeline.processors:
            return self.pipeline(image=image)["image"], _copy_record(record)
        groups = _box_groups(record)
        boxes = np.concatenate([b for _, b in groups]).astype(np.float32).reshape(-1, 4)
        out = self.pipeline(image=image, bboxes=boxes, box_index=np.arange(len(boxes)))
        new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        new_index = np.asarray(out["box_index"], dtype=np.int64).reshape(-1)
        image_out = out["image"]
        kept = _split_groups(groups, new_boxes, new_index)
        return image_out, _new_record(record, kept, image_out.shape[1], image_out.shape[0])

    def _reseed_in_worker(self) -> None:
        """Reseed from the DataLoader worker's seed when it changed (a new worker or epoch)."""
        info = torch.utils.data.get_worker_info()
        if info is None or info.seed == self._worker_seed:
            return
        seed = int(np.random.SeedSequence([self.cfg.seed, info.seed]).generate_state(1)[0])
        self.pipeline.set_random_seed(seed)
        self._worker_seed = info.seed


class EpochSeededAugment:
    """An augmentation whose random draws for an image depend only on ``(seed, epoch, image_id)``.

    Reseeding per sample makes the augmentation of a batch independent of the loader's
    workers and of where a resumed run starts, so a resumed run augments exactly as the
    uninterrupted one. ``epoch`` is set (by the engine's ``start_epoch``) before each epoch's
    iterator is made (workers receive a copy then).
    """

    def __init__(self, augment: Augment, seed: int) -> None:
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __call__(self, image: np.ndarray, record: ImageRecord) -> tuple[np.ndarray, ImageRecord]:
        key = zlib.crc32(str(record.image_id).encode())
        sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, key]).generate_state(1)[0])
        worker = torch.utils.data.get_worker_info()
        # Augment reseeds itself once per worker; mark that done so the per-sample seed holds.
        self.augment._worker_seed = worker.seed if worker is not None else None
        self.augment.pipeline.set_random_seed(sample_seed)
        return self.augment(image, record)


def _copy_record(record: ImageRecord) -> ImageRecord:
    """A copy of ``record`` whose arrays are copies too."""
    return dataclasses.replace(
        record, boxes=record.boxes.copy(), labels=record.labels.copy(), difficult=record.difficult.copy(),
        ignore_boxes=record.ignore_boxes.copy(), ignore_labels=record.ignore_labels.copy(),
        extras={k: np.array(v, copy=True) for k, v in record.extras.items()},
    )  # fmt: skip


def _box_groups(record: ImageRecord) -> list[tuple[str, np.ndarray]]:
    """The record's box groups in a fixed order: kept, ignore, then the extras groups."""
    groups = [("boxes", record.boxes), ("ignore_boxes", record.ignore_boxes)]
    groups += [(key, record.extras[key]) for key in BOX_GROUPS if key in record.extras]
    return [(name, np.asarray(b, dtype=np.float32).reshape(-1, 4)) for name, b in groups]


def _split_groups(
    groups: list[tuple[str, np.ndarray]], boxes: np.ndarray, index: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{group: (transformed boxes, indices of the surviving boxes within the group)}``."""
    kept, offset = {}, 0
    for name, group in groups:
        sel = (index >= offset) & (index < offset + len(group))
        kept[name] = (boxes[sel], index[sel] - offset)
        offset += len(group)
    return kept


def _new_record(
    record: ImageRecord, kept: dict[str, tuple[np.ndarray, np.ndarray]], width: int, height: int
) -> ImageRecord:
    """A new record with every per-object array subset like its boxes (the input is not touched)."""
    boxes, keep = kept["boxes"]
    ignore_boxes, keep_ignore = kept["ignore_boxes"]
    group_of = {k: key for key, aligned in BOX_GROUPS.items() for k in aligned}
    extras = {}
    for key, value in record.extras.items():
        value = np.asarray(value)
        if key in BOX_GROUPS:
            extras[key] = kept[key][0]
        elif key in group_of and group_of[key] in kept:
            extras[key] = value[kept[group_of[key]][1]]
        elif len(value) == len(record.boxes):
            extras[key] = value[keep]
        else:
            raise ValueError(f"{record.file_name}: extras[{key!r}] is not aligned with the boxes")
    return dataclasses.replace(
        record, width=width, height=height, boxes=boxes, labels=record.labels[keep],
        difficult=record.difficult[keep], ignore_boxes=ignore_boxes, ignore_labels=record.ignore_labels[keep_ignore],
        extras=extras,
    )  # fmt: skip
