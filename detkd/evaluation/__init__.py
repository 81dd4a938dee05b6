"""Detection metrics: COCO (pycocotools), PASCAL VOC (07 and 2010+) and KITTI 2D AP."""

from detkd.evaluation.base import DatasetEvaluator, box_ioa, box_iou
from detkd.evaluation.build import (
    EVALUATORS,
    build_evaluators,
    evaluate_predictions,
    families_for,
    format_metrics_table,
)
from detkd.evaluation.coco import COCOEvaluator
from detkd.evaluation.kitti import KITTIEvaluator
from detkd.evaluation.results import load_results, predictions_to_coco_json, write_results
from detkd.evaluation.voc import VOCEvaluator

__all__ = [
    "EVALUATORS",
    "COCOEvaluator",
    "DatasetEvaluator",
    "KITTIEvaluator",
    "VOCEvaluator",
    "box_ioa",
    "box_iou",
    "build_evaluators",
    "evaluate_predictions",
    "families_for",
    "format_metrics_table",
    "load_results",
    "predictions_to_coco_json",
    "write_results",
]
