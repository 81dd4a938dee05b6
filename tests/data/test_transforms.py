"""Box-aware augmentation keeps every per-object array aligned; the sample contract holds."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from detkd.config import AugmentSection
from detkd.data import AugmentConfig, DetectionDataset, build_augment, collate, read_kitti
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError

W, H = 100, 40


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def record() -> ImageRecord:
    """A KITTI-like record: every per-object array has distinct values to check alignment."""
    return ImageRecord(
        image_id="000001", file_name="x.png", width=W, height=H,
        boxes=np.array([[10, 5, 30, 25], [60, 10, 99, 39], [0, 0, 5, 5]], np.float32),
        labels=np.array([1, 2, 3]), difficult=np.array([True, False, True]),
        ignore_boxes=np.array([[40, 0, 50, 10], [45, 20, 55, 30]], np.float32), ignore_labels=np.array([0, 2]),
        extras={"truncated": np.array([0.1, 0.2, 0.3], np.float32), "occluded": np.array([0, 1, 2]),
                "neighbor_boxes": np.array([[70, 0, 80, 10]], np.float32), "neighbor_labels": np.array([1])},
    )  # fmt: skip


def mirror(boxes: np.ndarray) -> np.ndarray:
    return np.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], axis=1)


def test_hflip_mirrors_every_box_group_exactly(image: np.ndarray, record: ImageRecord) -> None:
    original = copy.deepcopy(record)
    out_image, out = build_augment(AugmentConfig(hflip=1.0))(image, record)
    assert np.array_equal(out_image, image[:, ::-1])
    np.testing.assert_allclose(out.boxes, mirror(record.boxes), atol=1e-3)
    np.testing.assert_allclose(out.ignore_boxes, mirror(record.ignore_boxes), atol=1e-3)
    np.testing.assert_allclose(out.extras["neighbor_boxes"], mirror(record.extras["neighbor_boxes"]), atol=1e-3)
    for key in ("truncated", "occluded", "neighbor_labels"):
        assert np.array_equal(out.extras[key], record.extras[key])
    assert np.array_equal(out.labels, record.labels) and np.array_equal(out.difficult, record.difficult)
    assert np.array_equal(out.ignore_labels, record.ignore_labels)
    assert out is not record and np.array_equal(record.boxes, original.boxes)  # the cached record is untouched


def test_vflip_mirrors_boxes_top_to_bottom(image: np.ndarray, record: ImageRecord) -> None:
    out_image, out = build_augment(AugmentConfig(hflip=0.0, vflip=1.0))(image, record)
    assert np.array_equal(out_image, image[::-1])
    flipped = np.stack([record.boxes[:, 0], H - record.boxes[:, 3], record.boxes[:, 2], H - record.boxes[:, 1]], axis=1)
    np.testing.assert_allclose(out.boxes, flipped, atol=1e-3)
    assert np.array_equal(out.labels, record.labels)


def test_scale_jitter_keeps_the_canvas_and_drops_boxes_pushed_out(image: np.ndarray, record: ImageRecord) -> None:
    out_image, out = build_augment(AugmentConfig(hflip=0.0, scale_jitter=(2.0, 2.0)))(image, record)
    assert out_image.shape == image.shape and (out.width, out.height) == (W, H)
    # zoom x2 about the centre (50, 20), then clipped: the corner box and the top regions leave
    np.testing.assert_allclose(out.boxes, [[0, 0, 10, 30], [70, 0, 100, 40]], atol=1e-3)
    assert out.labels.tolist() == [1, 2] and out.difficult.tolist() == [True, False]
    assert out.extras["truncated"].tolist() == pytest.approx([0.1, 0.2]) and out.extras["occluded"].tolist() == [0, 1]
    np.testing.assert_allclose(out.ignore_boxes, [[40, 20, 60, 40]], atol=1e-3)
    assert out.ignore_labels.tolist() == [2]
    assert out.extras["neighbor_boxes"].shape == (0, 4) and out.extras["neighbor_labels"].shape == (0,)


def test_zoom_out_shrinks_objects_on_the_same_canvas(image: np.ndarray, record: ImageRecord) -> None:
    out_image, out = build_augment(AugmentConfig(hflip=0.0, scale_jitter=(0.5, 0.5)))(image, record)
    assert out_image.shape == image.shape
    expected = (record.boxes - [50, 20, 50, 20]) * 0.5 + [50, 20, 50, 20]
    np.testing.assert_allclose(out.boxes, expected, atol=1e-3)
    assert np.array_equal(out.labels, record.labels)


def test_photometric_changes_leave_boxes_unchanged(image: np.ndarray, record: ImageRecord) -> None:
    cfg = AugmentConfig(hflip=0.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, photometric_p=1.0)
    out_image, out = build_augment(cfg)(image, record)
    assert out_image.shape == image.shape and out_image.dtype == np.uint8 and not np.array_equal(out_image, image)
    np.testing.assert_allclose(out.boxes, record.boxes, atol=1e-3)
    np.testing.assert_allclose(out.ignore_boxes, record.ignore_boxes, atol=1e-3)


def test_records_without_boxes(image: np.ndarray) -> None:
    cfg = AugmentConfig(hflip=1.0, scale_jitter=(0.5, 1.5), brightness=0.2)
    out_image, out = build_augment(cfg)(image, ImageRecord("a", "a.png", W, H))
    assert out_image.shape == image.shape and out.boxes.shape == (0, 4) and out.labels.shape == (0,)


def test_same_seed_same_augmentation(image: np.ndarray, record: ImageRecord) -> None:
    cfg = AugmentConfig(hflip=0.5, scale_jitter=(0.6, 1.4), brightness=0.3)
    runs = []
    for _ in range(2):
        aug = build_augment(cfg)
        runs.append([aug(image, record)[1].boxes for _ in range(5)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(runs[0][0], boxes) for boxes in runs[0][1:])  # draws differ call to call


class Fixed(Dataset):
    def __init__(self, image: np.ndarray, record: ImageRecord) -> None:
        self.image, self.record, self.augment = image, record, build_augment(AugmentConfig(hflip=0.5, scale_jitter=(0.5, 1.5)))

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> np.ndarray:
        return self.augment(self.image, self.record)[1].boxes.sum()


def test_dataloader_workers_are_reproducible_and_differ(image: np.ndarray, record: ImageRecord) -> None:
    def draw() -> list[float]:
        torch.manual_seed(0)
        loader = DataLoader(Fixed(image, record), batch_size=4, num_workers=2)
        return [float(v) for batch in loader for v in batch]

    first, second = draw(), draw()
    assert first == second
    assert first[:4] != first[4:8]  # batches 0 and 1 come from different workers


def test_config_validation_and_from_section() -> None:
    with pytest.raises(DetkdError, match="hflip"):
        AugmentConfig(hflip=1.5)
    with pytest.raises(DetkdError, match="scale_jitter"):
        AugmentConfig(scale_jitter=(1.5, 0.5))
    with pytest.raises(DetkdError, match="hue"):
        AugmentConfig(hue=0.7)
    cfg = AugmentConfig.from_section(AugmentSection(hflip=0.3, scale_jitter=[0.8, 1.2], brightness=0.1))
    assert cfg.hflip == 0.3 and cfg.scale_jitter == (0.8, 1.2) and cfg.brightness == 0.1
    assert AugmentConfig.from_section({"hue": 0.05}).hue == 0.05


def test_sample_contract(kitti_root: Path) -> None:
    index = read_kitti(str(kitti_root))
    index.records = index.records[:3]
    for augment in (None, build_augment(AugmentConfig(hflip=1.0, scale_jitter=(0.7, 1.3), brightness=0.2))):
        images, targets = collate([DetectionDataset(index, augment=augment)[i] for i in range(3)])
        for img, target, rec in zip(images, targets, index.records):
            assert img.dtype == torch.float32 and img.shape == (3, rec.height, rec.width)
            assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
            n = len(target["boxes"])
            assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
            assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
            assert target["difficult"].dtype == torch.bool and target["difficult"].shape == (n,)
            assert target["truncated"].shape == (n,) and target["occluded"].dtype == torch.int64
            assert target["ignore_boxes"].shape == (len(target["ignore_labels"]), 4)
            assert target["image_id"] == rec.image_id
            assert (target["labels"] >= 1).all() and (target["labels"] <= index.num_classes).all()
            if augment is None:
                assert torch.equal(target["boxes"], torch.from_numpy(rec.boxes))
