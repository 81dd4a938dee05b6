"""Optimizers and learning-rate schedules, stepped once per iteration.

The schedule is a linear warmup from ``warmup_factor * lr`` to ``lr`` over ``warmup_iters``
iterations, multiplied by either a multistep decay (``gamma`` at each epoch of ``milestones``)
or a cosine decay to 0 over the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from detkd.config import TrainSection
from detkd.errors import DetkdError


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: weights with decay; biases and norm scales (1-D) without."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(module: nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over the trainable parameters of ``module``."""
    groups = param_groups(module, cfg.weight_decay)
    if not groups:
        raise DetkdError("model: no trainable parameters (check model.trainable_layers)")
    if cfg.lr <= 0:
        raise DetkdError(f"train.lr: must be positive, got {cfg.lr}")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise DetkdError(f"train.optimizer: unknown optimizer {cfg.optimizer!r} (expected sgd or adamw)")


def lr_factor(cfg: TrainSection, iters_per_epoch: int) -> Callable[[int], float]:
    """``f(iteration) -> multiplier of lr``: warmup times the multistep or cosine decay."""
    total = max(1, cfg.epochs * iters_per_epoch)
    milestones = sorted(m * iters_per_epoch for m in cfg.milestones)
    if cfg.schedule not in ("multistep", "cosine"):
        raise DetkdError(f"train.schedule: unknown schedule {cfg.schedule!r} (expected multistep or cosine)")

    def factor(it: int) -> float:
        warm = 1.0
        if it < cfg.warmup_iters:
            alpha = it / cfg.warmup_iters
            warm = cfg.warmup_factor * (1 - alpha) + alpha
        if cfg.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
        return warm * cfg.gamma ** sum(it >= m for m in milestones)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainSection, iters_per_epoch: int) -> LambdaLR:
    """A per-iteration :class:`LambdaLR` (its state dict holds only plain numbers)."""
    return LambdaLR(optimizer, lr_factor(cfg, iters_per_epoch))
