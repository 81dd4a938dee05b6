"""Datasets: the VOC, KITTI and COCO readers, the sample contract, augmentation and statistics."""

from detkd.data.build import READERS, build_dataset, concat_indexes, load_index
from detkd.data.coco import read_coco
from detkd.data.common import DataWarning
from detkd.data.dataset import DatasetIndex, DetectionDataset, collate, record_to_target
from detkd.data.kitti import read_kitti
from detkd.data.records import ImageRecord, LoadReport
from detkd.data.stats import dataset_stats, format_stats
from detkd.data.transforms import AugmentConfig, build_augment
from detkd.data.voc import VOC_CLASSES, read_voc

__all__ = [
    "READERS",
    "VOC_CLASSES",
    "AugmentConfig",
    "DataWarning",
    "DatasetIndex",
    "DetectionDataset",
    "ImageRecord",
    "LoadReport",
    "build_augment",
    "build_dataset",
    "collate",
    "concat_indexes",
    "dataset_stats",
    "format_stats",
    "load_index",
    "read_coco",
    "read_kitti",
    "read_voc",
    "record_to_target",
]
