"""Run a detector over a dataset and score it with the evaluators of the dataset's format.

Under ``torchrun`` each rank predicts its shard of the images (:class:`~detkd.engine.data.ShardSampler`,
no padding) and rank 0 gathers them, so every image is counted exactly once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from detkd.config import Config
from detkd.data.dataset import DatasetIndex
from detkd.data.from_config import build_eval_dataset, data_classes, eval_classes
from detkd.engine.data import batches, build_eval_loader
from detkd.engine.distributed import (
    DistInfo,
    all_gather_objects,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from detkd.errors import DetkdError
from detkd.evaluation.build import evaluate_predictions
from detkd.evaluation.results import write_results
from detkd.models import build_model
from detkd.models.class_map import pretrained_for_classes
from detkd.models.weights import load_state_checked
from detkd.utils.checkpoint import read_checkpoint

log = logging.getLogger("detkd")

Prediction = dict[str, Any]  # {"image_id", "boxes": [N, 4] xyxy, "scores": [N], "labels": [N]} (numpy)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool = False) -> list[Prediction]:
    """The detections of ``model`` on every image of ``loader``, in the image's own pixel frame.

    torchvision's transform maps boxes back from the resized input to the original size, so
    ``boxes`` (float32 ``[N, 4]`` xyxy) are in the dataset image's frame; ``scores`` float32
    ``[N]``, ``labels`` int64 ``[N]`` in ``1..K``.
    """
    was_training = model.training
    model.eval()
    predictions: list[Prediction] = []
    try:
        for images, targets in tqdm(batches(loader), desc="eval", total=len(loader), disable=None if progress else True,
                                    leave=False):
            outputs = model([im.to(device, non_blocking=True) for im in images])
            for out, target in zip(outputs, targets):
                predictions.append({
                    "image_id": target["image_id"],
                    "boxes": out["boxes"].float().cpu().numpy(),
                    "scores": out["scores"].float().cpu().numpy(),
                    "labels": out["labels"].cpu().numpy().astype(np.int64),
                })
    finally:
        model.train(was_training)
    return predictions


def gather_predictions(predictions: list[Prediction], index: DatasetIndex, info: DistInfo) -> list[Prediction] | None:
    """Rank 0: every rank's predictions, one per image of ``index`` in its order; other ranks: None."""
    shards = all_gather_objects(predictions, info)
    if not info.is_main:
        return None
    by_id: dict[Any, Prediction] = {}
    for shard in shards:
        for p in shard:
            by_id.setdefault(p["image_id"], p)  # a padded duplicate, if any, counts once
    missing = [r.image_id for r in index.records if r.image_id not in by_id]
    if missing:
        raise RuntimeError(f"evaluation lost {len(missing)} images (first: {missing[0]!r})")
    return [by_id[r.image_id] for r in index.records]


def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    index: DatasetIndex,
    info: DistInfo,
    results_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Predict, gather, write the COCO results JSON (rank 0) and score: the metrics on every rank.

    Returns ``evaluate_predictions``'s families, e.g. ``{"coco": {"AP", "AP50", ...}, "voc07":
    {"mAP", "per_class"}, "voc": {...}}``.
    """
    local = predict(model, loader, info.device, progress=info.is_main)
    gathered = gather_predictions(local, index, info)
    metrics = None
    if info.is_main:
        if results_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(results_path)) or ".", exist_ok=True)
            write_results(gathered, index, os.fspath(results_path))
        metrics = evaluate_predictions(index, gathered)
    return broadcast_object(metrics, info)


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """``metrics[family][key]`` for ``name = "family.key"`` (e.g. ``voc.mAP``, ``coco.AP``)."""
    family, _, key = name.partition(".")
    value = metrics.get(family, {}).get(key) if isinstance(metrics.get(family), dict) else None
    if not isinstance(value, (int, float)):
        known = [f"{f}.{k}" for f, m in metrics.items() if isinstance(m, dict)
                 for k, v in m.items() if isinstance(v, (int, float))]
        raise DetkdError(f"train.metric: {name!r} is not a metric of this dataset (known: {', '.join(known)})")
    return float(value)


@dataclass
class EvalOutcome:
    """What :func:`evaluate_checkpoint` did: the metrics (every rank), classes and results file."""

    metrics: dict[str, Any]
    classes: tuple[str, ...]
    results_path: str
    is_main: bool


def default_results_path(checkpoint: str, split: str | None) -> str:
    """``runs/x/best.pt`` -> ``runs/x/best_test_results.json``."""
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"{stem}_{split or 'all'}_results.json")


def evaluate_checkpoint(cfg: Config, checkpoint: str | None, split: str | None = None,
                        results_path: str | None = None) -> EvalOutcome:
    """Score ``checkpoint`` (a detkd checkpoint or a model state dict) on ``split`` of ``cfg.data``;
    ``None``: the pretrained detector of ``cfg.model.weights`` as it is, its classes matched to
    the data's by name (:func:`detkd.models.class_map.pretrained_for_classes`).

    The model is the one ``cfg.model`` describes; a checkpoint that does not fit it is a
    :class:`DetkdError` naming the file. Runs under ``torchrun`` too (the images are shared out).
    """
    info = init_distributed(cfg.device)
    try:
        split = split or cfg.data.test_split
        if checkpoint is None:
            dataset = build_eval_dataset(cfg.data, classes=None, split=split)
            model = pretrained_for_classes(cfg.model, dataset.classes)
            default = os.path.join(cfg.output_dir, f"pretrained_{split}_results.json")
        else:
            model, dataset = checkpoint_model(cfg, checkpoint, split)
            default = default_results_path(checkpoint, split)
        model.to(info.device)
        results_path = results_path or default
        loader = build_eval_loader(dataset, cfg.data.num_workers, info)
        metrics = evaluate_model(model, loader, dataset.index, info, results_path=results_path)
        return EvalOutcome(metrics, tuple(dataset.classes), results_path, info.is_main)
    finally:
        cleanup_distributed(info)


def checkpoint_model(cfg: Config, checkpoint: str, split: str):
    """The model of ``cfg.model`` with ``checkpoint``'s weights, and the evaluation dataset of
    ``split`` read with the checkpoint's classes (which must be the config's data classes)."""
    run = read_checkpoint(checkpoint)
    weights, saved_classes = run.weights, run.classes
    if saved_classes:
        expected = data_classes(cfg.data)
        if tuple(saved_classes) != expected:
            raise DetkdError(f"{checkpoint}: trained on classes {saved_classes}, the config's data has "
                             f"{list(expected)} (set data.classes, or evaluate on the data it was trained on)")
    classes = eval_classes(cfg.data, saved_classes) if saved_classes else None
    dataset = build_eval_dataset(cfg.data, classes=classes, split=split)
    model = build_model(cfg.model, dataset.index.num_classes + 1)
    load_state_checked(model, weights, checkpoint, "checkpoint")
    return model, dataset
