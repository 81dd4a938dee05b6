"""Fixtures of the model tests: an empty torch cache without network, and a way to put weights
in it under the file names torchvision expects (random weights: the real loading code runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.models import WeightsEnum

from detkd.models.weights import hub_checkpoint_path


@pytest.fixture
def torch_home(tmp_path, monkeypatch, no_network):
    """An empty torch cache, and no network (tests/conftest.py): any connection attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def cache_weights(torch_home: Path) -> Callable[[WeightsEnum, torch.nn.Module], None]:
    """``cache_weights(weights, model)``: ``model``'s state dict saved where torch's cache holds ``weights``."""

    def save(weights: WeightsEnum, model: torch.nn.Module) -> None:
        path = Path(hub_checkpoint_path(weights))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)

    return save
