"""Any torchvision classifier CNN as a backbone (feature extraction under an FPN): stages found
by stride, ImageNet weights by name from a temporary hub cache, distillation from a ResNet
teacher, export that loads strict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from detkd.config import Config, ModelSection, RoISection, RPNSection, config_to_dict
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.models.feature_backbone import find_stages


def section(backbone: str, **fields) -> ModelSection:
    base = {"norm": "gn", "fpn_channels": 64, "min_size": 128, "max_size": 160, "trainable_layers": -1}
    return ModelSection(backbone=backbone, rpn=RPNSection(), roi=RoISection(), **{**base, **fields})


@pytest.mark.parametrize("backbone, stages", [
    ("regnet_y_400mf", ["trunk_output.block1", "trunk_output.block2", "trunk_output.block3", "trunk_output"]),
    ("efficientnet_b0", ["features.2", "features.3", "features.5", "features"]),
    ("resnext50_32x4d", ["layer1", "layer2", "layer3", "layer4"]),
])
def test_stages_are_the_last_shallowest_module_of_each_stride(backbone: str, stages: list[str]) -> None:
    names, channels = find_stages(torchvision.models.get_model(backbone, weights=None))
    assert names == stages and len(channels) == 4


def test_imagenet_weights_load_from_the_cache_and_bn_is_frozen(cache_weights) -> None:
    weights = torchvision.models.get_model_weights("regnet_y_400mf").DEFAULT
    classifier = torchvision.models.get_model("regnet_y_400mf", weights=None)
    cache_weights(weights, classifier)
    model = build_model(section("regnet_y_400mf", norm="frozen_bn", weights_backbone="DEFAULT", trainable_layers=3), 3)
    stem = model.backbone.body.get_submodule("stem.0").weight
    assert torch.equal(stem, classifier.stem[0].weight) and not stem.requires_grad  # the stem is frozen
    assert model.backbone.body.get_submodule("trunk_output.block4.block4-0.f.a.0").weight.requires_grad
    assert isinstance(model.backbone.body.get_submodule("stem.1"), torchvision.ops.misc.FrozenBatchNorm2d)


def test_a_family_member_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(DetkdError, match="unknown backbone 'regnet_y_401mf'"):
        build_model(section("regnet_y_401mf"), 3)


def test_a_regnet_student_learns_from_a_resnet_teacher_and_exports_strict(tmp_path: Path) -> None:
    from detkd.config import DistillConfig, load_config
    from detkd.data.synth import SYNTH_CLASSES
    from detkd.distill.build import build_distill_task
    from detkd.models.export import export_student, load_exported

    repo = Path(__file__).resolve().parents[2]
    num_classes = len(SYNTH_CLASSES) + 1
    (tmp_path / "teacher.yaml").write_text(f"_base_: {repo / 'configs' / 'synth' / 'teacher.yaml'}\n"
                                          "model: {min_size: 128, max_size: 160}\n")
    teacher_cfg = load_config(tmp_path / "teacher.yaml")
    torch.save({"model": build_model(teacher_cfg.model, num_classes).state_dict(), "config": config_to_dict(teacher_cfg),
                "classes": list(SYNTH_CLASSES)}, tmp_path / "teacher.pt")
    (tmp_path / "distill.yaml").write_text(
        f"_base_: [{repo / 'configs' / 'synth' / 'student_small.yaml'}, {repo / 'configs' / '_base_' / 'distill.yaml'}]\n"
        "model: {preset: null, backbone: regnet_y_400mf, norm: gn, fpn_channels: 64, trainable_layers: -1, "
        "min_size: 128, max_size: 160, rpn: {anchor_sizes: [8, 16, 32, 64, 128]}, roi: {box_head_width: 256}}\n"
        f"teacher: {{config: {tmp_path / 'teacher.yaml'}, checkpoint: {tmp_path / 'teacher.pt'}}}\n")
    cfg = load_config(tmp_path / "distill.yaml", schema=DistillConfig)
    task = build_distill_task(cfg, num_classes)
    assert task.pairing.describe()  # levels paired by stride with the ResNet-18 teacher
    optimizer = torch.optim.SGD([p for p in task.module.parameters() if p.requires_grad], lr=1e-4)
    target = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])}]
    for _ in range(2):
        losses = task.step(task.module.train(), [torch.rand(3, 100, 120)], target)
        assert all(torch.isfinite(v) for v in losses.values()) and "distill_hint" in losses
        optimizer.zero_grad()
        sum(task.loss_weights.get(k, 1.0) * v for k, v in losses.items()).backward()
        optimizer.step()
    plain_cfg = Config(model=cfg.model, data=cfg.data)
    torch.save({"model": task.module.state_dict(), "config": config_to_dict(plain_cfg),
                "classes": list(SYNTH_CLASSES)}, tmp_path / "last.pt")
    export_student(str(tmp_path / "last.pt"), str(tmp_path / "student.pt"))
    plain = build_model(plain_cfg.model, num_classes)
    plain.load_state_dict(torch.load(tmp_path / "student.pt", weights_only=True), strict=True)
    loaded, _ = load_exported(str(tmp_path / "student.pt"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), plain.state_dict().values()))
