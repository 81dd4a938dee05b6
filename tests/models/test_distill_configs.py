"""Every distillation config under configs/ builds its teacher and its student, as ``detkd
distill`` builds them (:func:`detkd.distill.build.build_distill_task`): torchvision's pretrained
weights are random ones put in torch's cache under their real file names (no download), a
teacher checkpoint that does not exist yet (``runs/...``) is a random one of the teacher's model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from detkd.config import DistillConfig, ModelSection, is_distill_config, load_config
from detkd.config.files import find_packaged
from detkd.data.synth import SYNTH_CLASSES
from detkd.data.voc import VOC_CLASSES
from detkd.distill.build import build_distill_task
from detkd.models import build_model
from detkd.models.weights import DETECTOR_BUILDERS, hub_checkpoint_path, resolve_weights
from detkd.models.zoo import classifier_of

REPO = Path(__file__).resolve().parents[2]
DISTILL_CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")
                         if is_distill_config(p))
PAIRS = [f"configs/{d}/distill_{s}.yaml" for d in ("voc", "kitti", "coco") for s in ("r18", "mnv3", "r50_half")]
COCO_CLASSES = 80  # the default of configs/coco (data.classes: null, from the instances file)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch cache shared by the module's tests (random weights are written once per name)."""
    return tmp_path_factory.mktemp("torch")


def cache_random_weights(model: ModelSection) -> None:
    """Random weights of the right network where torch's cache holds ``model``'s pretrained ones."""
    wanted = []
    if model.weights:
        builder = model.torchvision or DETECTOR_BUILDERS[model.backbone]
        weights = resolve_weights(model.weights, "model.weights", builder)
        wanted.append((weights, lambda: torchvision.models.get_model(
            builder, weights=None, weights_backbone=None, num_classes=len(weights.meta["categories"]))))
    if model.weights_backbone:
        classifier = classifier_of(model.torchvision) if model.torchvision else model.backbone
        weights = resolve_weights(model.weights_backbone, "model.weights_backbone", classifier)
        wanted.append((weights, lambda: torchvision.models.get_model(classifier, weights=None)))
    for weights, network in wanted:
        path = Path(hub_checkpoint_path(weights))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(network().state_dict(), path)


def classes_of(cfg: DistillConfig) -> int:
    """K + 1 for the config's data, without reading a dataset."""
    if cfg.data.classes:
        return len(cfg.data.classes) + 1
    return {"voc": len(VOC_CLASSES), "synth": len(SYNTH_CLASSES), "coco": COCO_CLASSES}[cfg.data.format] + 1


def test_the_papers_pairs_exist_on_every_real_dataset_from_the_resnet50_teacher() -> None:
    assert set(PAIRS) <= set(DISTILL_CONFIGS)
    for path in PAIRS:
        cfg = load_config(REPO / path, schema=DistillConfig)
        folder = path.split("/")[1]
        assert cfg.teacher.config == f"configs/{folder}/teacher_r50.yaml", path
        assert cfg.distill.rcn_cls.mode == "add" and cfg.distill.rcn_reg.bounded  # detkd's recipe
        header = (REPO / path).read_text().split("\n_base_")[0]
        assert f"detkd distill {path}" in header and "GPU time, an estimate" in header and "hours" in header
        assert "../_base_/distill.yaml" in header  # the paper's settings, one edit away


@pytest.mark.parametrize("path", DISTILL_CONFIGS)
def test_every_distillation_config_builds_its_teacher_and_student(path: str, torch_home, weights_cache, synth_root,
                                                                  tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(weights_cache))  # still without network (torch_home)
    fmt = load_config(REPO / path, schema=DistillConfig).data.format
    synth = [f"data.root={synth_root}", "data.synth.images=15", "data.synth.profile=standard"]
    overrides = synth if fmt == "synth" else [f"data.root={tmp_path}"]  # no dataset is read
    cfg = load_config(REPO / path, overrides, schema=DistillConfig)
    num_classes = classes_of(cfg)
    teacher_cfg = load_config(cfg.teacher.config)
    cache_random_weights(teacher_cfg.model)
    cache_random_weights(cfg.model)
    if cfg.teacher.checkpoint and not os.path.isfile(find_packaged(cfg.teacher.checkpoint)):
        torch.manual_seed(1)  # runs/.../last.pt: not trained yet, a random one of the teacher's model
        torch.save(build_model(teacher_cfg.model, num_classes).state_dict(), tmp_path / "teacher.pt")
        cfg = load_config(REPO / path, [*overrides, f"teacher.checkpoint={tmp_path / 'teacher.pt'}"], schema=DistillConfig)
    torch.manual_seed(0)
    task = build_distill_task(cfg, num_classes)
    student, teacher = task.module.student, task.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert student.roi_heads.box_predictor.cls_score.out_features == num_classes  # (a COCO teacher's is reduced)
    if cfg.student.init == "teacher":  # starts from the teacher's weights
        assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    elif cfg.model.weights_backbone:  # the (random) cached ImageNet weights were loaded
        assert loaded_from_cache(student, cfg.model)
    if cfg.distill.hint.enabled and cfg.distill.hint.loss != "attention" and cfg.distill.hint.adaptation:
        assert len(task.module.adapters) > 0


def loaded_from_cache(student: torch.nn.Module, model: ModelSection) -> bool:
    """Whether the first conv kernel of the cached backbone weights is a parameter of the student."""
    classifier = classifier_of(model.torchvision) if model.torchvision else model.backbone
    weights = resolve_weights(model.weights_backbone, "model.weights_backbone", classifier)
    state = torch.load(hub_checkpoint_path(weights), weights_only=True)
    kernel = next(v for v in state.values() if v.dim() == 4)
    return any(p.shape == kernel.shape and torch.equal(p, kernel) for p in student.backbone.parameters())
