"""detkd export: a plain torchvision state dict that loads strictly, and ONNX checked against PyTorch."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from detkd.cli import main
from detkd.config import Config, ModelSection
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.models.export import check_onnx, export_student, load_exported

CLASSES = ["circle", "square", "triangle"]


def student_cfg() -> ModelSection:
    cfg = ModelSection(preset="small", fpn_channels=32, returned_layers=[2, 3, 4], min_size=96, max_size=128)
    cfg.rpn.anchor_sizes = [16, 32, 64, 128]
    cfg.roi.box_head_width = 32
    return cfg


def plain_torchvision_model() -> FasterRCNN:
    """The model of :func:`student_cfg` built with torchvision's API only (no detkd)."""
    trunk = torchvision.models.resnet18(norm_layer=lambda c: nn.GroupNorm(32, c))
    backbone = BackboneWithFPN(
        trunk, {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512], 32,
        norm_layer=lambda c: nn.GroupNorm(16, c),
    )
    small = resolve_small()
    return FasterRCNN(
        backbone, num_classes=None, min_size=96, max_size=128,
        rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4),
        rpn_pre_nms_top_n_train=small.rpn.pre_nms_top_n_train, rpn_pre_nms_top_n_test=small.rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=small.rpn.post_nms_top_n_train, rpn_post_nms_top_n_test=small.rpn.post_nms_top_n_test,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(32 * 7 * 7, 32), box_predictor=FastRCNNPredictor(32, len(CLASSES) + 1),
        box_batch_size_per_image=small.roi.batch_size_per_image,
    )


def resolve_small() -> ModelSection:
    from detkd.models import resolve_model_config

    return resolve_model_config(student_cfg())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A distillation-style checkpoint: the student under ``student.``, plus adaptation layers."""
    torch.manual_seed(0)
    model = build_model(student_cfg(), len(CLASSES) + 1)
    module = {f"student.{k}": v for k, v in model.state_dict().items()}
    module["adapters.0.weight"] = torch.randn(32, 32, 1, 1)
    config = dataclasses.asdict(Config(model=student_cfg()))
    path = tmp_path_factory.mktemp("run") / "last.pt"
    torch.save({"model": module, "classes": CLASSES, "config": config, "epoch": 1}, path)
    return path, model.eval()


def images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, 96, 128, generator=gen), torch.rand(3, 120, 100, generator=gen)]


def test_export_loads_into_plain_torchvision(trained, tmp_path):
    checkpoint, reference = trained
    out = tmp_path / "student.pt"
    info = export_student(str(checkpoint), str(out))
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith(("student.", "adapters.")) for k in state)
    assert json.loads((tmp_path / "student.json").read_text()) == info
    assert info["classes"] == CLASSES and info["num_classes"] == 4 and info["model"]["preset"] is None
    plain = plain_torchvision_model()
    plain.load_state_dict(state, strict=True)
    plain.eval()
    rebuilt, _ = load_exported(str(out))
    with torch.no_grad():
        for image, models in zip(images(), [(plain, rebuilt), (plain,)], strict=True):
            expected = reference([image])[0]
            assert len(expected["boxes"]) > 0
            for model in models:
                got = model([image])[0]
                for key in ("boxes", "scores", "labels"):
                    assert torch.equal(got[key], expected[key]), key


def test_export_command(trained, tmp_path, capsys):
    checkpoint, _ = trained
    assert main(["export", str(checkpoint), str(tmp_path / "s.pt")]) == 0
    assert (tmp_path / "s.pt").is_file() and (tmp_path / "s.json").is_file()
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err
    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(DetkdError, match="no Faster R-CNN weights"):
        export_student(str(tmp_path / "bare.pt"), str(tmp_path / "y.pt"))


def test_export_never_destroys_a_file(trained, tmp_path, capsys):
    checkpoint, _ = trained
    run = tmp_path / "run"
    run.mkdir()
    copy = run / "last.pt"
    copy.write_bytes(checkpoint.read_bytes())
    before = copy.read_bytes()
    (run / "results.json").write_text("[]")
    cases = [
        (str(copy), "would overwrite the input"),  # the checkpoint itself
        (str(run / "weights.json"), "would overwrite the output"),  # the state dict and its own sidecar
        (str(run / "results.pt"), "results.json: exists; pass --force"),  # its sidecar over another file
    ]
    for out, problem in cases:
        assert main(["export", str(copy), out]) == 2
        err = capsys.readouterr().err.strip()
        assert problem in err and len(err.splitlines()) == 1, err
    assert copy.read_bytes() == before and (run / "results.json").read_text() == "[]"
    assert not (run / "weights.json").exists() and not (run / "results.pt").exists()
    assert main(["export", str(copy), str(run / "s.pt")]) == 0
    assert main(["export", str(copy), str(run / "s.pt")]) == 2 and "--force" in capsys.readouterr().err
    assert main(["export", str(copy), str(run / "s.pt"), "--force"]) == 0
    assert main(["export", str(copy), str(run / "t.pt"), "--onnx", str(copy)]) == 2  # ONNX over the input
    assert copy.read_bytes() == before


def test_onnx_without_the_extra(trained, tmp_path, capsys, monkeypatch):
    checkpoint, _ = trained
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    assert main(["export", str(checkpoint), str(tmp_path / "s.pt"), "--onnx", str(tmp_path / "s.onnx")]) == 2
    assert "pip install 'detkd[export]'" in capsys.readouterr().err
    assert not (tmp_path / "s.pt").exists(), "fails before any work"


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed (pip install 'detkd[export]')"
)
def test_onnx_matches_pytorch(trained, tmp_path, capsys):
    checkpoint, _ = trained
    files = []
    for i, image in enumerate(images()):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(files[-1])
    onnx_path = tmp_path / "s.onnx"
    assert main(["export", str(checkpoint), str(tmp_path / "s.pt"), "--onnx", str(onnx_path), "--images", *files]) == 0
    assert capsys.readouterr().out.count("onnx check: image") == len(files)
    other = build_model(student_cfg(), len(CLASSES) + 1).eval()  # other weights: the check must fail
    with pytest.raises(DetkdError, match="ONNX detections differ from PyTorch's on test image 0"):
        check_onnx(other, str(onnx_path), images()[:1])


@pytest.mark.parametrize("count", ["0", "-1"])
def test_check_images_must_be_a_positive_count_before_anything_is_written(trained, tmp_path, capsys, count):
    """-1 was an IndexError after OUT.pt was written, 0 "the test split has no images": both are
    refused by the option itself; the ONNX check needs at least one image."""
    checkpoint, _ = trained
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(checkpoint), str(tmp_path / "s.pt"), "--onnx", str(tmp_path / "s.onnx"),
              "--check-images", count])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument --check-images: expected a positive number, got {count}" in err, err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []
