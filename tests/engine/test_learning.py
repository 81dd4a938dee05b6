"""Learning, not just running: the ``tiny`` preset overfits 8 embedded-dataset images."""

from __future__ import annotations

from detkd.utils.checkpoint import load_checkpoint


def test_tiny_preset_reaches_ap50_090_on_its_8_training_images(trained_tiny) -> None:  # tests/conftest.py
    from detkd.config import load_config

    cfg, summary = load_config(trained_tiny.config), trained_tiny.summary
    assert cfg.model.preset == "tiny"
    assert summary["steps"] == cfg.train.epochs * 4 == 160
    ap50 = summary["metrics"]["coco"]["AP50"]
    assert ap50 >= 0.9, summary["metrics"]
    best = load_checkpoint(trained_tiny.checkpoint.parent / "best.pt")
    assert best["best"] == {"metric": "voc.mAP", "value": summary["metrics"]["voc"]["mAP"], "epoch": cfg.train.epochs}
