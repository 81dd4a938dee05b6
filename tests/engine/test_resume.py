"""``--resume`` after ``kill -9``: the resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from detkd.config import Config, save_config
from detkd.utils.checkpoint import load_checkpoint
from detkd.engine.trainer import train

# Trains CONFIG and SIGKILLs itself right after optimizer step KILL_AT (a kill -9 mid-run).
KILLED_RUN = """
import os, signal, sys
from detkd.config import load_config
from detkd.engine.trainer import train
kill_at = int(sys.argv[2])
def hook(trainer):
    if trainer.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
train(load_config(sys.argv[1]), hooks=[hook])
"""

# 8 images, batch 2: 4 iterations an epoch; last.pt at steps 3 (mid-epoch), 4 (epoch end), 6, 8.
# Augmentation on (flip, scale jitter), so its seeding is part of what must resume exactly.
OVERRIDES = ("data.limit=8", "train.epochs=2", "train.batch_size=2", "train.checkpoint_every=3",
             "train.warmup_iters=3", "train.log_every=1", "model.min_size=160", "model.max_size=200",
             "data.augment.hflip=0.5", "data.augment.scale_jitter=[0.8,1.2]")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def run_killed(cfg: Config, kill_at: int, tmp_path: Path) -> None:
    config = tmp_path / f"killed_{kill_at}.yaml"
    save_config(cfg, config)
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(config), str(kill_at)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def test_killed_runs_resume_to_identical_weights(synth_root: Path, make_config: Callable[..., Config],
                                                 tmp_path: Path) -> None:
    reference = make_config(synth_root, *OVERRIDES, f"output_dir={tmp_path / 'reference'}")
    summary = train(reference)
    assert summary["steps"] == 8
    expected = weights(tmp_path / "reference" / "last.pt")

    # kill at step 5: resume from the end of epoch 1; kill at 7: from the middle of epoch 2 (step 6)
    for kill_at, resumed_from in ((5, 4), (7, 6)):
        cfg = make_config(synth_root, *OVERRIDES, f"output_dir={tmp_path / f'killed{kill_at}'}")
        run_killed(cfg, kill_at, tmp_path)
        last = tmp_path / f"killed{kill_at}" / "last.pt"
        assert load_checkpoint(last)["step"] == resumed_from
        assert train(cfg, resume=True)["steps"] == 8
        got = weights(last)
        assert got.keys() == expected.keys()
        different = [k for k in expected if not torch.equal(got[k], expected[k])]
        assert not different, f"kill at step {kill_at}: {len(different)} tensors differ, e.g. {different[:3]}"
        steps = [json.loads(line)["step"] for line in (last.parent / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["type"] == "train"]
        assert steps == list(range(1, 9))  # the killed run's records after its checkpoint were dropped
