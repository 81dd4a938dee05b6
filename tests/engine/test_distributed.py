"""Two gloo processes on CPU under torchrun: sharded training and a gathered evaluation that
counts every test image exactly once, equal to a single-process evaluation of the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from detkd.config import Config, save_config
from detkd.engine.inference import evaluate_checkpoint

# 12 training images, batch 2 on each of 2 ranks: 3 iterations an epoch (6 on one process);
# 3 test images: rank 0 predicts 2, rank 1 predicts 1 (a padding sampler would repeat one).
OVERRIDES = ("train.epochs=1", "train.batch_size=2", "train.log_every=1", "train.warmup_iters=2",
             "train.lr=2e-3", "model.min_size=160", "model.max_size=200", "model.roi.score_thresh=0.0")


def detections_per_image(path: Path) -> Counter:
    return Counter(d["image_id"] for d in json.loads(path.read_text()))


def test_two_gloo_processes_gather_each_image_once(synth_root: Path, make_config: Callable[..., Config],
                                                   tmp_path: Path) -> None:
    cfg = make_config(synth_root, *OVERRIDES)
    config = tmp_path / "ddp.yaml"
    save_config(cfg, config)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "detkd", "train", str(config)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = Path(cfg.output_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3]  # written once, by rank 0
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) == 1

    # the gathered detections: every test image once (each with score_thresh 0: 100 detections)
    gathered = detections_per_image(run / "results.json")
    assert sorted(gathered) == ["000005", "000010", "000015"]

    # the same weights evaluated by one process (one thread, as each torchrun worker: same arithmetic)
    single = evaluate_checkpoint(cfg, str(run / "last.pt"), results_path=str(tmp_path / "single.json"))
    assert detections_per_image(tmp_path / "single.json") == gathered
    assert json.loads((tmp_path / "single.json").read_text()) == json.loads((run / "results.json").read_text())
    assert single.metrics == evals[0]["metrics"]
