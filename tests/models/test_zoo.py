"""model.torchvision: torchvision's own Faster R-CNN builders by name, with weights from a
temporary torch hub cache (random weights under the file names torchvision expects: the real
loading code runs, nothing downloads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision

from detkd.config import ModelSection, RoISection, RPNSection
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.models.class_map import IGNORED_NAMES
from detkd.models.zoo import ZOO_BUILDERS, builder_kwargs

SMALL = {"min_size": 128, "max_size": 160}


def section(builder: str, **fields) -> ModelSection:
    return ModelSection(torchvision=builder, rpn=RPNSection(), roi=RoISection(), **fields)


def targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])}]


def cached_coco_detector(cache_weights) -> tuple[str, torchvision.models.WeightsEnum]:
    """A random 91-class mobilenet_v3_large_320_fpn in the temporary cache as its COCO weights."""
    builder = "fasterrcnn_mobilenet_v3_large_320_fpn"
    weights = torchvision.models.get_model_weights(builder).DEFAULT
    cache_weights(weights, torchvision.models.get_model(builder, weights=None, weights_backbone=None, num_classes=91))
    return builder, weights


@pytest.mark.parametrize("builder", ZOO_BUILDERS)
def test_each_builder_is_torchvisions_own_model_and_trains(builder: str) -> None:
    torch.manual_seed(0)
    model = build_model(section(builder, **SMALL), num_classes=4)
    torch.manual_seed(0)
    reference = torchvision.models.get_model(builder, weights=None, weights_backbone=None, num_classes=4, **SMALL)
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert (model.transform.min_size, model.transform.max_size) == ((128,), 160)
    losses = model.train()([torch.rand(3, 100, 120)], targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_builders_defaults_hold_unless_a_key_is_set() -> None:
    model = build_model(section("fasterrcnn_mobilenet_v3_large_320_fpn"), num_classes=3)
    assert model.transform.min_size == (320,) and model.rpn._pre_nms_top_n["testing"] == 150  # the builder's own
    assert builder_kwargs(section("fasterrcnn_resnet50_fpn", min_size=400)) == {"min_size": 400}


@pytest.mark.parametrize("field, value", [("backbone", "resnet18"), ("fpn_channels", 128), ("preset", "small")])
def test_a_key_the_builder_cannot_take_is_an_error_naming_it(field: str, value) -> None:
    with pytest.raises(DetkdError, match=f"model.{field}"):
        build_model(section("fasterrcnn_resnet50_fpn", **{field: value}), num_classes=3)
    with pytest.raises(DetkdError, match="model.rpn.anchor_sizes"):
        build_model(ModelSection(torchvision="fasterrcnn_resnet50_fpn", rpn=RPNSection(anchor_sizes=[8, 16, 32, 64, 128]),
                                 roi=RoISection()), num_classes=3)
    with pytest.raises(DetkdError, match="unknown builder 'fasterrcnn_resnet18'"):
        build_model(section("fasterrcnn_resnet18"), num_classes=3)


def test_coco_weights_from_the_cache_keep_all_but_the_predictor(cache_weights) -> None:
    builder = "fasterrcnn_mobilenet_v3_large_320_fpn"
    weights = torchvision.models.get_model_weights(builder).DEFAULT
    with pytest.raises(DetkdError, match="weights file not found"):
        build_model(section(builder, weights="DEFAULT"), num_classes=4)
    coco = torchvision.models.get_model(builder, weights=None, weights_backbone=None, num_classes=91)
    cache_weights(weights, coco)
    model = build_model(section(builder, weights="DEFAULT"), num_classes=4)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    ours, theirs = model.state_dict(), coco.state_dict()
    same = [k for k in theirs if not k.startswith("roi_heads.box_predictor.") and "num_batches_tracked" not in k]
    assert same and all(torch.equal(ours[k], theirs[k]) for k in same)
    frozen = [n for n, p in model.backbone.body.named_parameters() if not p.requires_grad]
    assert frozen  # trainable_layers 3 of 6, as torchvision trains it from these weights


@pytest.mark.parametrize("teacher, student", [
    ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_320_fpn"),
    ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn"),
    ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn"),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn_v2"),
])  # every builder once as the teacher and once as the student
def test_zoo_models_distil_as_teacher_and_student(teacher: str, student: str, tmp_path: Path) -> None:
    """Two distillation steps with every term on (hints through adapters, RoI terms on v2's conv
    head): finite losses, gradients in the student and its adapters only."""
    from detkd.config import DistillConfig, config_to_dict, load_config
    from detkd.data.synth import SYNTH_CLASSES
    from detkd.distill.build import build_distill_task

    repo = Path(__file__).resolve().parents[2]
    sizes = "min_size: 96, max_size: 128"
    (tmp_path / "teacher.yaml").write_text(f"_base_: {repo / 'configs' / 'synth' / '_base.yaml'}\n"
                                          f"model: {{torchvision: {teacher}, {sizes}}}\n")
    teacher_cfg = load_config(tmp_path / "teacher.yaml")
    num_classes = len(SYNTH_CLASSES) + 1
    torch.save({"model": build_model(teacher_cfg.model, num_classes).state_dict(), "config": config_to_dict(teacher_cfg),
                "classes": list(SYNTH_CLASSES)}, tmp_path / "teacher.pt")
    (tmp_path / "distill.yaml").write_text(
        f"_base_: [{repo / 'configs' / 'synth' / '_base.yaml'}, {repo / 'configs' / '_base_' / 'distill.yaml'}]\n"
        f"model: {{torchvision: {student}, {sizes}}}\n"
        f"teacher: {{config: {tmp_path / 'teacher.yaml'}, checkpoint: {tmp_path / 'teacher.pt'}}}\n")
    task = build_distill_task(load_config(tmp_path / "distill.yaml", schema=DistillConfig), num_classes)
    params = [p for p in task.module.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4)
    images = [torch.rand(3, 100, 120), torch.rand(3, 90, 110)]
    for _ in range(2):
        losses = task.step(task.module, images, targets() * 2)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        total = sum(task.loss_weights.get(k, 1.0) * v for k, v in losses.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert {"distill_rcn_cls", "distill_rcn_reg", "distill_hint"} <= set(losses)  # the RoI terms and the hints
    assert all(p.grad is None for p in task.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.module.adapters.parameters())


def test_a_zoo_student_exports_and_loads_strict_into_the_builder_its_sidecar_names(tmp_path: Path) -> None:
    from detkd.config import Config, config_to_dict
    from detkd.models.export import export_student, load_exported

    cfg = Config(model=section("fasterrcnn_mobilenet_v3_large_320_fpn", min_size=160, max_size=200))
    model = build_model(cfg.model, num_classes=3)
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": ["a", "b"]}, tmp_path / "last.pt")
    info = export_student(str(tmp_path / "last.pt"), str(tmp_path / "student.pt"))
    assert info["builder"] == "fasterrcnn_mobilenet_v3_large_320_fpn"
    plain = torchvision.models.get_model(info["builder"], weights=None, weights_backbone=None, num_classes=3,
                                         **builder_kwargs(section(info["builder"], min_size=160, max_size=200)))
    plain.load_state_dict(torch.load(tmp_path / "student.pt", weights_only=True), strict=True)
    loaded, _ = load_exported(str(tmp_path / "student.pt"))
    image = [torch.rand(3, 120, 150)]
    with torch.no_grad():
        assert torch.equal(loaded(image)[0]["boxes"], plain.eval()(image)[0]["boxes"])


def test_a_coco_trained_teacher_teaches_as_it_is_through_its_matched_classes(
        tmp_path: Path, cache_weights) -> None:
    """No teacher.checkpoint: the teacher config's COCO weights (random, in a temporary hub
    cache), its predictor reduced to the data's classes by teacher.class_map."""
    from detkd.config import DistillConfig, load_config
    from detkd.data.synth import SYNTH_CLASSES
    from detkd.distill.build import build_distill_task
    from detkd.models.class_map import ReducedPredictor

    builder, weights = cached_coco_detector(cache_weights)
    coco = [c for c in weights.meta["categories"] if c not in IGNORED_NAMES]
    class_map = ", ".join(f"{name}: {coco[i]}" for i, name in enumerate(SYNTH_CLASSES))
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "teacher.yaml").write_text(f"_base_: {repo / 'configs' / 'synth' / '_base.yaml'}\n"
                                          f"model: {{torchvision: {builder}, weights: DEFAULT}}\n")
    (tmp_path / "distill.yaml").write_text(
        f"_base_: [{repo / 'configs' / 'synth' / '_base.yaml'}, {repo / 'configs' / '_base_' / 'distill.yaml'}]\n"
        f"data: {{classes: [{', '.join(SYNTH_CLASSES)}]}}\n"
        f"model: {{torchvision: {builder}, min_size: 160, max_size: 200}}\n"
        f"teacher: {{config: {tmp_path / 'teacher.yaml'}, class_map: {{{class_map}}}}}\n")
    task = build_distill_task(load_config(tmp_path / "distill.yaml", schema=DistillConfig), len(SYNTH_CLASSES) + 1)
    assert isinstance(task.teacher.roi_heads.box_predictor, ReducedPredictor)
    losses = task.step(task.module.train(), [torch.rand(3, 100, 120)], targets())
    assert torch.isfinite(losses["distill_rcn_cls"]) and all(p.grad is None for p in task.teacher.parameters())


def test_detkd_eval_scores_a_coco_trained_detector_as_it_is(tmp_path: Path, cache_weights,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No --checkpoint: the config's COCO weights (random here, in a temporary hub cache) on the
    data's classes by name; without weights it is a one-line error."""
    import json

    from detkd.cli import main

    builder, weights = cached_coco_detector(cache_weights)
    root = tmp_path / "synth"
    assert main(["data", "synth", str(root), "--images", "12", "--profile", "easy"]) == 0
    from detkd.data.synth import SYNTH_CLASSES

    coco = [c for c in weights.meta["categories"] if c not in IGNORED_NAMES][:len(SYNTH_CLASSES)]
    for xml in (root / "voc" / "Annotations").glob("*.xml"):  # the embedded data's shapes renamed to COCO names
        text = xml.read_text()
        for shape, name in zip(SYNTH_CLASSES, coco):
            text = text.replace(f"<name>{shape}</name>", f"<name>{name}</name>")
        xml.write_text(text)
    names = "[" + ", ".join(coco) + "]"
    config = tmp_path / "coco_teacher.yaml"
    config.write_text(f"data: {{format: voc, root: {root / 'voc'}, test_split: test, classes: {names}}}\n"
                      f"model: {{torchvision: {builder}, weights: DEFAULT}}\noutput_dir: {tmp_path / 'out'}\n")
    capsys.readouterr()
    assert main(["eval", str(config), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["voc"]["mAP"] <= 1.0 and (tmp_path / "out" / "pretrained_test_results.json").is_file()
    config.write_text(config.read_text().replace(", weights: DEFAULT", ""))
    assert main(["eval", str(config)]) == 2
    assert "give --checkpoint PATH" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed (pip install 'detkd[export]')")
@pytest.mark.parametrize("fields", [{"torchvision": "fasterrcnn_mobilenet_v3_large_320_fpn"},
                                    {"backbone": "regnet_y_400mf", "norm": "gn", "fpn_channels": 64,
                                     "trainable_layers": -1}])
def test_zoo_and_feature_extraction_students_pass_the_onnx_parity_check(fields: dict, tmp_path: Path) -> None:
    from detkd.config import Config, config_to_dict
    from detkd.models.export import check_onnx, export_onnx, export_student, load_exported

    cfg = Config(model=ModelSection(rpn=RPNSection(), roi=RoISection(), min_size=160, max_size=200, **fields))
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=3)
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": ["a", "b"]}, tmp_path / "last.pt")
    export_student(str(tmp_path / "last.pt"), str(tmp_path / "student.pt"))
    loaded, _ = load_exported(str(tmp_path / "student.pt"))
    images = [torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    export_onnx(loaded, str(tmp_path / "student.onnx"), images[0])
    lines = check_onnx(loaded, str(tmp_path / "student.onnx"), images)  # raises on any disagreement
    assert len(lines) == 2 and all(": 0 detections" not in line for line in lines), lines
