"""Checkpoints: atomic writes, the safe loader refusing arbitrary pickles, RNG round trips."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from detkd.engine.checkpoint import rng_state, set_rng_state
from detkd.errors import DetkdError
from detkd.utils.checkpoint import load_checkpoint, save_checkpoint

MARK = "/tmp/detkd-test-pickle-ran"


class Payload:
    """An arbitrary object; unpickling it would run code (``__reduce__``)."""

    def __reduce__(self):
        return (open, (MARK, "w"))


class Plain:
    """A custom class with no tricks: still not tensors and plain types."""

    def __init__(self) -> None:
        self.value = 3


def test_round_trip_keeps_tensors_numbers_and_rng(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "epoch": 2, "best": {"metric": "voc.mAP", "value": 0.5, "epoch": 1},
             "rng": [rng_state()], "config": {"train": {"lr": 0.01, "milestones": [8, 11]}}}
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2 and loaded["best"] == state["best"] and loaded["config"] == state["config"]
    assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())
    expected = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(loaded["rng"][0])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


@pytest.mark.parametrize("obj", [Payload(), Plain()], ids=["reduce-payload", "custom-class"])
def test_arbitrary_pickled_objects_are_refused(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"model": {"w": torch.zeros(1)}, "extra": obj}, f, pickle_module=pickle)
    if os.path.exists(MARK):
        os.unlink(MARK)
    with pytest.raises(DetkdError, match="evil.pt.*refused"):
        load_checkpoint(path)
    assert not os.path.exists(MARK)


def test_missing_and_corrupt_files_are_errors_naming_them(tmp_path: Path) -> None:
    with pytest.raises(DetkdError, match="nothere.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nothere.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.ones(1000)}})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DetkdError, match="truncated.pt: not a readable checkpoint"):
        load_checkpoint(truncated)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(DetkdError, match="text.pt"):
        load_checkpoint(text)


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})  # lambdas cannot be pickled
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("where", ["model", "optimizer", "plain"])
def test_non_finite_tensors_are_refused_naming_the_first(tmp_path: Path, where: str) -> None:
    model = torch.nn.Linear(3, 2).state_dict()
    optimizer = {"state": {0: {"exp_avg": torch.zeros(2, 3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    if where == "model":
        model["bias"][1] = float("inf")
    elif where == "optimizer":
        optimizer["state"][0]["exp_avg"][0, 2] = float("nan")
    else:
        model["weight"][0, 0] = float("nan")
    path = tmp_path / "damaged.pt"
    save_checkpoint(path, model if where == "plain" else {"model": model, "optimizer": optimizer, "epoch": 1,
                                                           "rng": [{"torch": torch.get_rng_state()}]})
    first = {"model": "model.bias", "optimizer": "optimizer.state.0.exp_avg", "plain": "weight"}[where]
    with pytest.raises(DetkdError, match=rf"damaged\.pt: refused: 1 tensor\(s\) hold NaN or inf \(first: {first}\)"):
        load_checkpoint(path)
