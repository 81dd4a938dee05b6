"""Pretrained weights from torch's cache only (never downloaded) and from checkpoint files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.request

import pytest
import torch
import torchvision
from torchvision.models import Weights, WeightsEnum

from detkd.config import ModelSection, RoISection
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.models.weights import hub_checkpoint_path, load_cached_weights, load_matching_weights, offline
from detkd.utils.checkpoint import detector_state_dict

R18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1


def test_missing_weights_name_the_file_and_url(torch_home):
    expected = torch_home / R18_FILE
    with pytest.raises(DetkdError) as err:
        build_model(ModelSection(backbone="resnet18", weights_backbone="ResNet18_Weights.IMAGENET1K_V1"), 3)
    message = str(err.value)
    assert str(expected) in message and "https://download.pytorch.org/models/" + R18_FILE in message
    assert "offline: DETKD_OFFLINE=1" in message and not expected.exists()
    with pytest.raises(DetkdError, match=r"fasterrcnn_resnet50_fpn_coco-258fb6c6\.pth"):
        build_model(ModelSection(weights="DEFAULT"), 3)  # the detector weights of resnet50


def test_cached_backbone_weights_load(torch_home):
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    weights = torchvision.models.get_weight("ResNet18_Weights.IMAGENET1K_V1")
    assert hub_checkpoint_path(weights) == str(torch_home / R18_FILE)
    os.makedirs(torch_home)
    torch.save(state, torch_home / R18_FILE)
    for name in ("ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"):
        model = build_model(ModelSection(backbone="resnet18", weights_backbone=name), 3)
        body = model.backbone.body
        assert torch.equal(body.conv1.weight, state["conv1.weight"])
        assert torch.equal(body.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_backbone_weights_of_another_network(torch_home):
    with pytest.raises(DetkdError, match="ResNet50_Weights.IMAGENET1K_V1 are not weights of resnet18"):
        build_model(ModelSection(backbone="resnet18", weights_backbone="ResNet50_Weights.IMAGENET1K_V1"), 3)
    with pytest.raises(DetkdError, match="unknown torchvision weights 'ResNet18_Weights.NOPE'"):
        build_model(ModelSection(backbone="resnet18", weights_backbone="ResNet18_Weights.NOPE"), 3)


def test_cached_detector_weights_keep_a_new_predictor(torch_home):
    """COCO weights (91 classes) for a 5-class model: all but the class predictor load."""
    torch.manual_seed(0)
    coco = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    weights = torchvision.models.get_weight("FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1")
    os.makedirs(torch_home)
    torch.save(coco.state_dict(), hub_checkpoint_path(weights))
    cfg = ModelSection(backbone="mobilenet_v3_large", weights="COCO_V1")
    cfg.rpn.anchor_layout = "all_levels"
    model = build_model(cfg, 5)
    assert torch.equal(model.rpn.head.conv[0][0].weight, coco.rpn.head.conv[0][0].weight)
    assert torch.equal(model.roi_heads.box_head.fc7.weight, coco.roi_heads.box_head.fc7.weight)
    assert model.roi_heads.box_predictor.cls_score.out_features == 5


def small_cfg(**fields) -> ModelSection:
    cfg = ModelSection(backbone="resnet18", norm="gn", fpn_channels=32, returned_layers=[2, 3, 4], **fields)
    cfg.rpn.anchor_sizes = [16, 32, 64, 128]
    cfg.roi.box_head_width = 32
    return cfg


def test_checkpoint_weights_and_wrapper_prefixes(tmp_path):
    torch.manual_seed(0)
    trained = build_model(small_cfg(), 4).state_dict()
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "distilled.pt"
    torch.save(trained, plain)
    module = {f"student.{k}": v for k, v in trained.items()}
    module.update({"adapters.0.weight": torch.zeros(2, 2), "teacher.backbone.x": torch.zeros(1)})
    torch.save({"model": module, "epoch": 3, "config": {}}, wrapped)
    for path in (plain, wrapped):
        loaded = build_model(small_cfg(checkpoint=str(path)), 4).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in trained.items()), path
    assert set(detector_state_dict(module, "x")) == set(trained)


def test_checkpoint_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": build_model(small_cfg(), 4).state_dict()}, path)
    cfg = small_cfg(checkpoint=str(path))
    cfg.fpn_channels = 48
    with pytest.raises(DetkdError, match=rf"{path}: the checkpoint weights do not fit .*backbone\.fpn\..*shape \[32"):
        build_model(cfg, 4)
    with pytest.raises(DetkdError, match=rf"{path}: .*roi_heads\.box_predictor\.cls_score\.weight: shape \[4, 32\]"):
        build_model(small_cfg(checkpoint=str(path)), 6)
    torch.save({"model": {"head.weight": torch.zeros(1)}}, path)
    with pytest.raises(DetkdError, match="no Faster R-CNN weights found"):
        build_model(small_cfg(checkpoint=str(path)), 4)


def local_weights(tmp_path, monkeypatch, state: dict) -> tuple[WeightsEnum, str]:
    """A weights enum whose URL names a file with its real SHA-256 prefix (as torchvision's do),
    and torch.hub's ``urlopen`` serving that file from disk: torchvision's download code runs
    whole (progress, hash check, move into the cache) without a network."""
    served = tmp_path / "served.pth"
    torch.save(state, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]
    url = f"https://download.invalid/models/tiny-{digest}.pth"
    weights = WeightsEnum("TinyWeights", {"V1": Weights(url=url, transforms=None, meta={})}).V1
    opened = []

    def urlopen(request, *args, **kwargs):
        opened.append(request.full_url)
        return urllib.request.urlopen(served.as_uri())

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    monkeypatch.delenv("DETKD_OFFLINE")
    return weights, opened


def test_online_missing_weights_are_downloaded_as_torchvision_does(torch_home, tmp_path, monkeypatch):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    weights, opened = local_weights(tmp_path, monkeypatch, state)
    loaded, path = load_cached_weights(weights, "model.weights_backbone")
    assert opened == [weights.url] and path == hub_checkpoint_path(weights) and os.path.isfile(path)
    assert torch.equal(loaded["w"], state["w"])
    load_cached_weights(weights, "model.weights_backbone")  # cached now: not fetched again
    assert len(opened) == 1
    monkeypatch.setenv("DETKD_OFFLINE", "1")  # offline, a cached file is still read
    assert torch.equal(load_cached_weights(weights, "k")[0]["w"], state["w"])


def test_a_download_with_the_wrong_hash_is_refused_and_leaves_nothing(torch_home, tmp_path, monkeypatch):
    """resnet18-f37072fd.pth served with other bytes: torchvision's hash check fails, the build
    says so in one line, and the cache holds nothing."""
    local_weights(tmp_path, monkeypatch, torchvision.models.resnet18().state_dict())
    with pytest.raises(DetkdError, match=r"download of https://download.pytorch.org/models/resnet18-f37072fd\.pth "
                                         r"failed: invalid hash value") as err:
        build_model(ModelSection(backbone="resnet18", weights_backbone="ResNet18_Weights.IMAGENET1K_V1"), 3)
    assert str(torch_home) in str(err.value) and not (torch_home / R18_FILE).exists()
    assert not any(torch_home.iterdir())


def test_the_offline_flag_of_the_cli_refuses_downloads(monkeypatch):
    from detkd.cli import main

    monkeypatch.delenv("DETKD_OFFLINE")
    assert not offline()
    main(["--offline", "configs", "--path"])
    assert offline() and os.environ["DETKD_OFFLINE"] == "1"
    for value, expected in (("0", False), ("false", False), ("", False), ("yes", True)):
        monkeypatch.setenv("DETKD_OFFLINE", value)
        assert offline() is expected


def test_matching_weights_inherit_the_heads_of_another_architecture(tmp_path) -> None:
    """``model.checkpoint_matching``: a MobileNetV3 student with the teacher's FPN and box-head widths
    takes the teacher's RPN head, box head and FPN output convs, and keeps its own backbone."""
    torch.manual_seed(0)
    teacher = build_model(ModelSection(preset="small", min_size=128, max_size=160), 4)
    path = tmp_path / "teacher.pt"
    torch.save({"model": teacher.state_dict()}, path)
    student_cfg = ModelSection(preset="tiny", min_size=128, max_size=160, fpn_channels=128,
                               roi=RoISection(box_head_width=256))
    student = build_model(student_cfg, 4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    modules = load_matching_weights(student, str(path))
    assert {"rpn.head", "roi_heads.box_head", "roi_heads.box_predictor", "backbone.fpn"} <= set(modules)
    after, source = student.state_dict(), teacher.state_dict()
    for key in ("rpn.head.cls_logits.weight", "roi_heads.box_head.fc6.weight", "roi_heads.box_predictor.cls_score.weight"):
        assert torch.equal(after[key], source[key]) and not torch.equal(before[key], source[key])
    body = [k for k in after if k.startswith("backbone.body.")]
    assert body and all(torch.equal(after[k], before[k]) for k in body)
    built = build_model(dataclasses.replace(student_cfg, checkpoint=str(path), checkpoint_matching=True), 4)
    assert torch.equal(built.state_dict()["rpn.head.conv.0.0.weight"], source["rpn.head.conv.0.0.weight"])
    with pytest.raises(DetkdError, match="no layer of the checkpoint fits"):
        load_matching_weights(build_model(ModelSection(preset="tiny", min_size=128, max_size=160), 7), str(path))
