"""Which metric families apply to which data, and running them all.

Families: ``coco`` (pycocotools AP@[.5:.95] etc.), ``voc07`` (VOC2007 11-point AP50), ``voc``
(VOC2010+ all-point AP50) and, for KITTI data, ``kitti`` (Easy/Moderate/Hard AP_R40 at the
class IoU thresholds). Every family gets the same ground truth (a ``DatasetIndex``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from detkd.data.dataset import DatasetIndex
from detkd.errors import DetkdError
from detkd.evaluation.base import DatasetEvaluator
from detkd.evaluation.coco import COCOEvaluator
from detkd.evaluation.kitti import LEVELS, KITTIEvaluator
from detkd.evaluation.voc import VOCEvaluator
from detkd.registry import Registry
from detkd.utils.formatting import padded_table, pct

EvaluatorBuilder = Callable[[DatasetIndex], DatasetEvaluator]
EVALUATORS: Registry[EvaluatorBuilder] = Registry("metric family")

FAMILIES = {
    "voc": ["coco", "voc07", "voc"],
    "kitti": ["coco", "voc07", "voc", "kitti"],
    "coco": ["coco", "voc07", "voc"],
}
# the scalar results of each family, the ones ``train.metric`` may name (KITTI's are per class and level)
METRIC_KEYS = {"coco": ("AP", "AP50", "AP75", "APs", "APm", "APl"), "voc07": ("mAP",), "voc": ("mAP",), "kitti": ()}


def check_metric(name: str, data_format: str) -> None:
    """``name`` must be ``family.key`` of a scalar metric scored on ``data_format`` data (before
    any training: a typo would otherwise surface after the first epoch)."""
    family, _, key = name.partition(".")
    valid = [f"{f}.{k}" for f in families_for(data_format) for k in METRIC_KEYS[f]]
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DetkdError(f"train.metric: {name!r} is not a metric of {data_format} data{hint} (valid: {', '.join(valid)})")


@EVALUATORS.register("coco")
def _coco(index: DatasetIndex) -> DatasetEvaluator:
    return COCOEvaluator(index)


@EVALUATORS.register("voc07")
def _voc07(index: DatasetIndex) -> DatasetEvaluator:
    return VOCEvaluator(index, use_07_metric=True)


@EVALUATORS.register("voc")
def _voc(index: DatasetIndex) -> DatasetEvaluator:
    return VOCEvaluator(index, use_07_metric=False)


@EVALUATORS.register("kitti")
def _kitti(index: DatasetIndex) -> DatasetEvaluator:
    return KITTIEvaluator(index)


def families_for(data_format: str) -> list[str]:
    """The metric families that apply to a dataset format ("voc", "kitti" or "coco")."""
    if data_format not in FAMILIES:
        raise DetkdError(f"unknown dataset format {data_format!r} (known: {', '.join(FAMILIES)})")
    return list(FAMILIES[data_format])


def build_evaluators(index: DatasetIndex, families: Sequence[str] | None = None) -> dict[str, DatasetEvaluator]:
    """One evaluator per family (default: :func:`families_for` the index's format), all on the
    same records."""
    names = list(families) if families is not None else families_for(index.format)
    return {name: EVALUATORS.get(name)(index) for name in names}


def evaluate_predictions(index: DatasetIndex, predictions: Sequence[dict[str, Any]],
                         families: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Score per-image predictions with every applicable family: ``{family: metrics}``."""
    results = {}
    for name, evaluator in build_evaluators(index, families).items():
        evaluator.process(predictions)
        results[name] = evaluator.evaluate()
    return results


def _summary_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    if "coco" in results:
        rows += [[f"COCO {k}", pct(results["coco"].get(k), 2)] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    for fam, title in (("voc07", "VOC07 mAP@0.5 (11-point)"), ("voc", "VOC mAP@0.5 (all-point)")):
        if fam in results:
            rows.append([title, pct(results[fam].get("mAP"), 2)])
    if "kitti" in results:
        for level in LEVELS:
            vals = [v[level] for v in results["kitti"].values() if v.get(level) is not None]
            rows.append([f"KITTI mAP {level}", pct(sum(vals) / len(vals) if vals else None, 2)])
    return rows


def _class_rows(results: dict[str, dict[str, Any]], classes: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["class"]
    header += ["COCO AP", "COCO AP50"] if "coco" in results else []
    header += ["VOC07 AP50"] if "voc07" in results else []
    header += ["VOC AP50"] if "voc" in results else []
    header += [f"KITTI {lv}" for lv in LEVELS] if "kitti" in results else []
    rows = []
    for name in classes:
        row = [name]
        if "coco" in results:
            row += [pct(results["coco"].get("per_class", {}).get(name), 2),
                    pct(results["coco"].get("per_class_ap50", {}).get(name), 2)]
        row += [pct(results[f]["per_class"].get(name), 2) for f in ("voc07", "voc") if f in results]
        if "kitti" in results:
            row += [pct(results["kitti"].get(name, {}).get(lv), 2) for lv in LEVELS]
        rows.append(row)
    return header, rows


def format_metrics_table(results: dict[str, dict[str, Any]], classes: Sequence[str]) -> str:
    """A markdown table of the summary metrics, then one of the per-class APs (in percent, two
    decimals; "-" where undefined), columns padded to be read as plain text."""
    lines = padded_table(["metric", "value (%)"], _summary_rows(results))
    header, rows = _class_rows(results, classes)
    if len(header) > 1:
        lines += ["", *padded_table(header, rows)]
    return "\n".join(lines)
