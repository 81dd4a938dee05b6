"""Transfer sets in distillation: the teacher's detections from its dense outputs equal its own
inference, and only the transfer-set images of a batch get them as boxes."""

from __future__ import annotations

import pytest
import torch

from detkd.config import ModelSection
from detkd.distill.teacher import freeze_teacher, run_teacher, teacher_detections
from detkd.models import build_model

CLASSES = 3


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return freeze_teacher(build_model(ModelSection(preset="tiny", min_size=128, max_size=192), CLASSES + 1))


def images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.rand(3, 150, 170, generator=g), torch.rand(3, 120, 200, generator=g), torch.rand(3, 96, 96, generator=g)]


def test_teacher_detections_equal_torchvisions_own_inference(teacher: torch.nn.Module, one_thread: None) -> None:
    batch = images()
    with torch.no_grad():
        every = teacher(batch)  # torchvision's forward on the same batch (GroupNorm sees its padding)
    reference = [every[0], every[2]]
    outputs = run_teacher(teacher, batch)
    found = teacher_detections(teacher, outputs, [0, 2], [tuple(batch[i].shape[-2:]) for i in (0, 2)], 0.0)
    assert len(found) == 2
    for mine, ref in zip(found, reference):
        assert len(ref["boxes"]) > 0  # random weights still detect: every class scores about 1 / 4
        assert torch.allclose(mine["boxes"], ref["boxes"], atol=1e-3)
        assert torch.equal(mine["labels"], ref["labels"])


def test_the_score_threshold_keeps_the_confident_detections(teacher: torch.nn.Module, one_thread: None) -> None:
    batch = images()
    with torch.no_grad():
        reference = teacher(batch)[0]
    threshold = float(reference["scores"].median())
    kept = teacher_detections(teacher, run_teacher(teacher, batch), [0], [tuple(batch[0].shape[-2:])], threshold)[0]
    assert torch.equal(kept["labels"], reference["labels"][reference["scores"] >= threshold])
    assert 0 < len(kept["boxes"]) < len(reference["boxes"])
    assert teacher_detections(teacher, run_teacher(teacher, batch), [], [], 0.5) == []


def test_the_baseline_of_a_run_with_a_transfer_set_learns_from_labels_only(tmp_path) -> None:
    from pathlib import Path

    from detkd.config import DistillConfig
    from detkd.experiments.runner import Cell, cell_config

    config = str(Path(__file__).resolve().parents[2] / "configs" / "synth" / "distill_small.yaml")
    overrides = ("data.unlabeled.synth_images=5",)
    distilled = cell_config(Cell("kd", config, overrides), str(tmp_path / "kd"))
    baseline = cell_config(Cell("base", config, overrides, plain=True), str(tmp_path / "base"))
    assert isinstance(distilled, DistillConfig) and distilled.data.unlabeled.synth_images == 5
    assert not isinstance(baseline, DistillConfig) and baseline.data.unlabeled.sources() == []
