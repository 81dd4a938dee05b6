"""What the engine trains: a *task* owns the trained module and turns a batch into named losses.

The trainer never looks inside a task. It wraps ``task.module`` in DistributedDataParallel,
gives its trainable parameters to the optimizer, calls ``task.step(model, images, targets)``
with ``model`` being ``task.module`` or its DDP wrapper, and sums the returned, unweighted loss
terms with ``task.loss_weights`` in one place (:func:`weighted_total`). ``task.detector`` is the
Faster R-CNN that is evaluated and saved as a checkpoint's ``model``.

The plain detector task (:class:`DetectorTask`) trains a torchvision Faster R-CNN on its own
losses; the distillation task trains a module holding the student and the frozen teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from detkd.config import Config
from detkd.models import build_model

DETECTION_LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


class TrainTask(Protocol):
    """The engine's view of what it trains.

    Attributes:
        module: what DDP wraps and the optimizer trains (its parameters with ``requires_grad``).
        detector: the detector evaluated and saved as ``model`` in checkpoints (may be ``module``).
        loss_weights: the weight of each loss term ``step`` returns (a missing term weighs 1).
        find_unused_parameters: passed to DDP (optional attribute, default False).

    Optionally ``pop_records() -> list[dict]``: extra records (e.g. the distillation task's
    gradient shares) that the trainer writes to ``metrics.jsonl`` after each step.
    """

    module: nn.Module
    detector: nn.Module
    loss_weights: dict[str, float]

    def step(self, model: nn.Module, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """``images``: ``[3, H, W]`` floats in [0, 1]; -> unweighted scalar loss terms by name."""
        ...


TaskBuilder = Callable[[Config, int], TrainTask]  # (cfg, num_classes = K + 1 with background)


@dataclass
class DetectorTask:
    """A torchvision Faster R-CNN trained on its four detection losses, each with weight 1."""

    detector: nn.Module
    loss_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DETECTION_LOSSES, 1.0))

    @property
    def module(self) -> nn.Module:
        return self.detector

    def step(self, model: nn.Module, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        return model(images, targets)


def build_detector_task(cfg: Config, num_classes: int) -> DetectorTask:
    """The task of ``detkd train``: the detector of ``cfg.model``; ``num_classes`` = K + 1 (background)."""
    return DetectorTask(build_model(cfg.model, num_classes))


def weighted_total(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum_k weights[k] * losses[k]`` (weight 1 for a term ``weights`` does not name)."""
    terms = [weights.get(name, 1.0) * value for name, value in losses.items()]
    if not terms:
        raise ValueError("the task returned no loss terms")
    return torch.stack([t.float() for t in terms]).sum()
