"""A non-finite loss stops the run with an error naming the iteration and the loss term."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from detkd.cli import main
from detkd.config import Config, save_config
from detkd.engine.task import DETECTION_LOSSES

# A learning rate that makes the weights explode after the first step.
EXPLODE = ("data.limit=4", "train.batch_size=1", "train.epochs=1", "train.optimizer=sgd", "train.lr=1e12",
           "train.warmup_iters=0", "train.clip_grad_norm=null", "model.min_size=160", "model.max_size=200")


def test_exploding_loss_stops_with_iteration_and_term(synth_root: Path, make_config: Callable[..., Config],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "explode.yaml"
    save_config(make_config(synth_root, *EXPLODE), config)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    found = re.match(r"detkd: error: non-finite loss at iteration (\d+) \(epoch 1, batch \d\): (\w+) = (nan|inf|-inf)",
                     last)
    assert found, last
    assert int(found.group(1)) >= 2  # the first step is finite; the exploded weights are not
    assert found.group(2) in DETECTION_LOSSES
    assert not (tmp_path / "run" / "last.pt").exists()
