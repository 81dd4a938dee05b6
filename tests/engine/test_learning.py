"""Learning, not just running: the ``tiny`` preset overfits 8 embedded-dataset images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from detkd.config import Config
from detkd.engine.checkpoint import load_checkpoint
from detkd.engine.trainer import train

EPOCHS = 40
# AdamW with a short warmup and cosine decay (configs/synth/_base.yaml), no augmentation, on
# the 8 images it is scored on: 160 iterations of batch 2.
LEARN = ("data.train_split=first8", "data.test_split=first8", "data.augment.hflip=0", f"train.epochs={EPOCHS}",
         "train.batch_size=2", "train.lr=3e-3", "train.warmup_iters=20", f"train.eval_every={EPOCHS}",
         "train.log_every=20")


def test_tiny_preset_reaches_ap50_090_on_its_8_training_images(synth_root: Path,
                                                               make_config: Callable[..., Config]) -> None:
    cfg = make_config(synth_root, *LEARN)
    assert cfg.model.preset == "tiny"
    summary = train(cfg)
    assert summary["steps"] == EPOCHS * 4
    ap50 = summary["metrics"]["coco"]["AP50"]
    assert ap50 >= 0.9, summary["metrics"]
    best = load_checkpoint(Path(cfg.output_dir) / "best.pt")
    assert best["best"] == {"metric": "voc.mAP", "value": summary["metrics"]["voc"]["mAP"], "epoch": EPOCHS}
