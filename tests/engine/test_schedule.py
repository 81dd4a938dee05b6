"""Optimizer parameter groups and the per-iteration learning-rate schedule."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from detkd.config import TrainSection
from detkd.engine.schedule import build_optimizer, build_scheduler
from detkd.errors import DetkdError


def lrs(cfg: TrainSection, iters_per_epoch: int) -> list[float]:
    module = nn.Linear(2, 2)
    optimizer = build_optimizer(module, cfg)
    scheduler = build_scheduler(optimizer, cfg, iters_per_epoch)
    out = []
    for _ in range(cfg.epochs * iters_per_epoch):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_multistep_by_epoch() -> None:
    cfg = TrainSection(epochs=4, lr=1.0, warmup_iters=4, warmup_factor=0.1, milestones=[2, 3], gamma=0.5)
    got = lrs(cfg, iters_per_epoch=5)
    assert got[0] == pytest.approx(0.1) and got[2] == pytest.approx(0.55) and got[4] == pytest.approx(1.0)
    assert got[9] == pytest.approx(1.0) and got[10] == pytest.approx(0.5) and got[15] == pytest.approx(0.25)


def test_cosine_decays_to_zero_over_the_run() -> None:
    cfg = TrainSection(epochs=2, lr=2.0, warmup_iters=0, schedule="cosine")
    got = lrs(cfg, iters_per_epoch=10)
    assert got[0] == pytest.approx(2.0) and got[10] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(got, got[1:])) and got[-1] < 0.03


def test_no_weight_decay_on_biases_and_norms() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
    for name in ("sgd", "adamw"):
        optimizer = build_optimizer(module, dataclasses.replace(TrainSection(), optimizer=name, weight_decay=0.1))
        decays = {tuple(p.shape): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        assert decays == {(4, 3, 3, 3): 0.1, (4,): 0.0}


def test_unknown_optimizer_is_a_user_error() -> None:
    with pytest.raises(DetkdError, match="train.optimizer.*'adam'"):
        build_optimizer(nn.Linear(1, 1), TrainSection(optimizer="adam"))
