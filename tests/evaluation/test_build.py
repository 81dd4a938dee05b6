"""Metric families per format, running them all, JSON-ready results and the terminal table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError
from detkd.evaluation import EVALUATORS, build_evaluators, evaluate_predictions, families_for, format_metrics_table


def test_families_for_each_format():
    assert families_for("voc") == ["coco", "voc07", "voc"]
    assert families_for("coco") == ["coco", "voc07", "voc"]
    assert families_for("kitti") == ["coco", "voc07", "voc", "kitti"]
    with pytest.raises(DetkdError, match="unknown dataset format"):
        families_for("yolo")
    assert EVALUATORS.names() == ["coco", "kitti", "voc", "voc07"]
    with pytest.raises(DetkdError, match="did you mean 'voc07'"):
        EVALUATORS.get("voc7")


def test_evaluate_predictions_on_kitti_like_data():
    box = np.array([[10, 10, 110, 110]], np.float32)
    records = [ImageRecord(image_id=f"{i:06d}", file_name=f"/k/{i:06d}.png", width=400, height=300, boxes=box,
                           labels=np.array([1]), difficult=np.zeros(1, bool),
                           extras={"truncated": np.zeros(1, np.float32), "occluded": np.zeros(1, np.int64)})
               for i in range(3)]
    index = DatasetIndex(format="kitti", root="/k", split=None, classes=("Car", "Pedestrian"), records=records)
    preds = [{"image_id": r.image_id, "boxes": box, "scores": np.array([0.9]), "labels": np.array([1])} for r in records]
    assert set(build_evaluators(index)) == {"coco", "voc07", "voc", "kitti"}
    out = evaluate_predictions(index, preds)
    assert out["voc"] == {"mAP": 1.0, "per_class": {"Car": 1.0, "Pedestrian": None}}
    assert out["voc07"]["mAP"] == 1.0 and out["coco"]["AP"] == pytest.approx(1.0)
    assert out["kitti"]["Pedestrian"] == {"easy": None, "moderate": None, "hard": None}
    json.dumps(out, allow_nan=False)  # plain JSON: None, never NaN
    table = format_metrics_table(out, index.classes)
    assert "| VOC mAP@0.5 (all-point)" in table and "| Car " in table and "| Pedestrian " in table
    assert "KITTI moderate" in table and " - " in table
