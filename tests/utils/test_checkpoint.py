"""The typed checkpoint reader: what a training checkpoint, a distillation checkpoint and a plain
state dict read as, and the inverse the trainer saves with (the refusals: tests/engine/test_checkpoint.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from detkd.engine.trainer import train
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.utils.checkpoint import RESUME_KEYS, SavedRun, checkpoint_state, read_checkpoint, save_checkpoint

FAST = ("data.limit=4", "train.batch_size=2", "train.epochs=1", "train.eval_every=0", "model.min_size=96",
        "model.max_size=120")


def test_a_training_checkpoint_reads_as_the_run_that_wrote_it(synth_root: Path, make_config, one_thread) -> None:
    cfg = make_config(synth_root, *FAST)
    summary = train(cfg)
    run = read_checkpoint(Path(cfg.output_dir) / "last.pt")
    assert run.path == str(Path(cfg.output_dir) / "last.pt") and not run.plain and run.module is None
    assert run.classes and (run.config["seed"], run.config["output_dir"]) == (cfg.seed, cfg.output_dir)
    assert (run.epoch, run.iteration, run.step) == (1, 0, summary["steps"]) and run.best["metric"] == cfg.train.metric
    assert run.optimizer and run.scheduler and run.scaler is not None and len(run.rng) == 1
    assert run.missing_for_resume() == []
    model = build_model(cfg.model, len(run.classes) + 1)
    model.load_state_dict(run.weights)  # the detector's weights, every key
    assert run.weights.keys() == run.model_state.keys()


def test_a_plain_state_dict_is_the_models_weights_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    state = {f"student.{k}": v for k, v in {"backbone.w": torch.ones(2), "rpn.b": torch.zeros(1)}.items()}
    save_checkpoint(path, {**state, "adapters.0.weight": torch.ones(1)})
    run = read_checkpoint(path)
    assert run.plain and run.classes is None and run.config is None and run.epoch is None
    assert set(run.model_state) == {"student.backbone.w", "student.rpn.b", "adapters.0.weight"}
    assert set(run.weights) == {"backbone.w", "rpn.b"}  # student. stripped, adapters dropped
    assert run.missing_for_resume() == list(RESUME_KEYS)  # weights, but not a last.pt


def test_a_distillation_checkpoint_keeps_its_module_and_the_students_weights(tmp_path: Path) -> None:
    detector = {"backbone.w": torch.ones(2), "roi_heads.b": torch.zeros(1)}
    module = {**{f"student.{k}": v for k, v in detector.items()}, "adapters.0.weight": torch.ones(1)}
    path = tmp_path / "last.pt"
    save_checkpoint(path, checkpoint_state(SavedRun(str(path), model=detector, module=module, classes=["a"],
                                                    config={"distill": {}}, epoch=2, step=9)))
    run = read_checkpoint(path)
    assert set(run.module) == set(module) and set(run.weights) == set(detector)
    assert (run.classes, run.config, run.epoch, run.step, run.best) == (["a"], {"distill": {}}, 2, 9, None)
    assert run.missing_for_resume() == ["optimizer", "scheduler", "scaler", "iteration", "best", "rng"]


def test_checkpoint_state_writes_the_set_fields_under_their_keys(tmp_path: Path) -> None:
    run = SavedRun("x.pt", model={"backbone.w": torch.ones(1)}, classes=["a", "b"], config={"seed": 0}, epoch=3)
    assert checkpoint_state(run).keys() == {"model", "classes", "config", "epoch"}
    path = tmp_path / "again.pt"
    save_checkpoint(path, checkpoint_state(run))
    again = read_checkpoint(path)
    assert [getattr(again, f.name) for f in dataclasses.fields(SavedRun)][2:] == \
        [getattr(run, f.name) for f in dataclasses.fields(SavedRun)][2:]


@pytest.mark.parametrize("state", [{"epoch": 1}, {"model": {"w": 3}, "epoch": 1}], ids=["no model", "not tensors"])
def test_a_file_without_model_weights_says_so_when_they_are_asked_for(tmp_path: Path, state: dict) -> None:
    path = tmp_path / "other.pt"
    save_checkpoint(path, state)
    run = read_checkpoint(path)  # readable: the epoch is there
    assert run.epoch == 1 and run.model is None and "model" in run.missing_for_resume()
    for field in ("model_state", "weights"):
        with pytest.raises(DetkdError, match=r"other\.pt: holds no model weights"):
            getattr(run, field)


def test_wrongly_typed_entries_read_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    save_checkpoint(path, {"model": {"backbone.w": torch.ones(1)}, "classes": "a,b", "config": [1], "epoch": "3"})
    run = read_checkpoint(path)
    assert (run.classes, run.config, run.epoch) == (None, None, None) and set(run.weights) == {"backbone.w"}


def test_a_state_dict_of_another_model_has_no_detector_weights(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    save_checkpoint(path, {"conv1.weight": torch.ones(1), "fc.bias": torch.ones(1)})
    run = read_checkpoint(path)
    assert set(run.model_state) == {"conv1.weight", "fc.bias"}
    with pytest.raises(DetkdError, match=r"resnet\.pt: no Faster R-CNN weights found \(keys start with conv1"):
        run.weights


def test_the_bundled_teacher_reads_as_weights_classes_and_config() -> None:
    from detkd.utils.assets import ASSET_DIR, TEACHER_FILE

    run = read_checkpoint(ASSET_DIR / TEACHER_FILE)
    assert run.classes and run.config and not run.plain and run.epoch is None
    assert all(v.dtype == torch.float16 for v in run.weights.values() if v.is_floating_point())
    assert {"model", "data", "train"} <= set(run.config)  # a resolved training config
