"""The opened-up student forward gives torchvision's own losses, and samples that are consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.rpn import concat_box_prediction_layers

from detkd.config import ModelSection, RPNSection
from detkd.data.build import build_dataset
from detkd.data.synth import SYNTH_CLASSES, ensure_synth
from detkd.distill.student import StudentOutputs, gather_at_anchors, student_forward
from detkd.models import build_model

Batch = tuple[list[torch.Tensor], list[dict]]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> FasterRCNN:
    """The ``tiny`` preset (MobileNetV3 + 5-level FPN) at 128 px, untrained, K = len(SYNTH_CLASSES)."""
    torch.manual_seed(0)
    return build_model(ModelSection(preset="tiny", min_size=128, max_size=192), len(SYNTH_CLASSES) + 1).train()


@pytest.fixture(scope="module")
def synth_batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    """Three images of the embedded dataset, with their targets' extra keys (difficult, ignore_boxes...);
    the third image has its boxes taken away (an image without objects)."""
    root = Path(ensure_synth(str(tmp_path_factory.mktemp("synth")), 4, 0))
    dataset = build_dataset("voc", str(root / "voc"), split="train")
    images, targets = zip(*(dataset[i] for i in range(3)))
    targets[2]["boxes"], targets[2]["labels"] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    assert {"difficult", "ignore_boxes", "image_id"} <= set(targets[0])
    return list(images), list(targets)


def run(model: FasterRCNN, batch: Batch, seed: int) -> StudentOutputs:
    torch.manual_seed(seed)
    return student_forward(model, *batch)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_and_random_draws_equal_torchvisions_forward(model: FasterRCNN, synth_batch: Batch, seed: int) -> None:
    torch.manual_seed(seed)
    expected = model(*synth_batch)
    state = torch.get_rng_state()
    out = run(model, synth_batch, seed)
    assert torch.equal(torch.get_rng_state(), state)  # the same number of draws
    assert list(out.losses) == list(expected)
    for name, value in expected.items():
        assert torch.equal(out.losses[name], value), (name, out.losses[name], value)


def test_multiscale_resize_draws_like_torchvision(synth_batch: Batch) -> None:
    torch.manual_seed(1)
    model = build_model(ModelSection(preset="tiny", min_size=128, max_size=192), len(SYNTH_CLASSES) + 1).train()
    model.transform.min_size = (96, 128, 160)  # the resize draws a size per image from torch's RNG
    for seed in (0, 5):
        torch.manual_seed(seed)
        expected = model(*synth_batch)
        out = run(model, synth_batch, seed)
        assert all(torch.equal(out.losses[k], v) for k, v in expected.items())


def test_extra_target_keys_change_nothing(model: FasterRCNN, synth_batch: Batch) -> None:
    images, targets = synth_batch
    plain = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    a, b = run(model, synth_batch, 4), run(model, (images, plain), 4)
    assert all(torch.equal(a.losses[k], b.losses[k]) for k in a.losses)
    assert "difficult" in targets[0] and targets[0]["boxes"].shape[0] > 0  # the caller's targets are untouched


def test_shapes(model: FasterRCNN, synth_batch: Batch) -> None:
    images, targets = synth_batch
    out = run(model, synth_batch, 0)
    image_list, _ = model.transform(images, [dict(t) for t in targets])
    assert out.image_sizes == [tuple(s) for s in image_list.image_sizes]
    assert out.padded_shape == tuple(image_list.tensors.shape[-2:]) and out.padded_shape[0] % 32 == 0
    assert all(h <= out.padded_shape[0] and w <= out.padded_shape[1] and max(h, w) <= 192 for h, w in out.image_sizes)
    b, a = len(images), model.rpn.head.cls_logits.out_channels
    assert list(out.features) == ["0", "1", "2", "3", "pool"]
    for f, o, d in zip(out.features.values(), out.objectness, out.rpn_deltas):
        assert f.shape[0] == b and f.shape[1] == 64 and f.requires_grad
        assert o.shape == (b, a, *f.shape[-2:]) and d.shape == (b, 4 * a, *f.shape[-2:]) and o.requires_grad
    rpn, s = out.rpn, len(out.rpn.index)
    assert 0 < rpn.num_positive < s <= b * model.rpn.fg_bg_sampler.batch_size_per_image
    assert rpn.labels.shape == rpn.logits.shape == (s,) and rpn.labels.sum() == rpn.num_positive
    assert rpn.targets.shape == rpn.deltas.shape == rpn.anchors.shape == (s, 4)
    assert all(t.shape == (s,) and t.dtype == torch.int64 for t in (rpn.image, rpn.level, rpn.anchor, rpn.y, rpn.x))
    assert set(rpn.image.tolist()) == set(range(b))  # the image without objects has background samples
    roi, n = out.roi, sum(len(p) for p in out.roi.proposals)
    k1 = len(SYNTH_CLASSES) + 1
    assert len(roi.proposals) == b and all(p.shape[1] == 4 for p in roi.proposals)
    assert roi.class_logits.shape == (n, k1) and roi.box_regression.shape == (n, 4 * k1)
    assert roi.labels.shape == (n,) and roi.targets.shape == (n, 4) and (roi.labels > 0).any()
    assert roi.labels.min() >= 0 and roi.labels.max() < k1
    assert set(out.losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


def test_sampled_anchors_sit_where_they_say(model: FasterRCNN, synth_batch: Batch) -> None:
    images, targets = synth_batch
    out = run(model, synth_batch, 0)
    rpn = out.rpn
    assert rpn.labels[: rpn.num_positive].eq(1).all() and rpn.labels[rpn.num_positive :].eq(0).all()
    logit_at = torch.stack([out.objectness[l][i, a, y, x] for l, i, a, y, x in zip(
        rpn.level.tolist(), rpn.image.tolist(), rpn.anchor.tolist(), rpn.y.tolist(), rpn.x.tolist())])
    assert torch.equal(logit_at, rpn.logits)
    for s in range(0, len(rpn.index), 7):
        level, i, a, y, x = (int(t[s]) for t in (rpn.level, rpn.image, rpn.anchor, rpn.y, rpn.x))
        assert torch.equal(rpn.deltas[s], out.rpn_deltas[level][i, 4 * a : 4 * a + 4, y, x])
    # the flat index is torchvision's: the same entry of concat_box_prediction_layers, and of the anchors
    flat_logits, flat_deltas = concat_box_prediction_layers(out.objectness, out.rpn_deltas)
    assert torch.equal(flat_logits.flatten()[rpn.index], rpn.logits) and torch.equal(flat_deltas[rpn.index], rpn.deltas)
    image_list, _ = model.transform(images, [dict(t) for t in targets])
    anchors = torch.cat(model.rpn.anchor_generator(image_list, list(out.features.values())))
    assert torch.equal(anchors[rpn.index], rpn.anchors)
    # an anchor's box centre lies in its cell: (x + 1/2) * stride, up to the anchor generator's rounding
    strides = torch.tensor([out.padded_shape[1] // f.shape[-1] for f in out.features.values()])[rpn.level]
    centre = (rpn.anchors[:, :2] + rpn.anchors[:, 2:]) / 2
    assert torch.allclose(centre, torch.stack([rpn.x, rpn.y], 1).float() * strides[:, None], atol=1.0)
    # regression targets: the box coder's encoding of an anchor against the box it matched
    positive = slice(0, rpn.num_positive)
    decoded = model.rpn.box_coder.decode_single(rpn.targets[positive], rpn.anchors[positive])
    boxes = torch.cat([t["boxes"] for t in model.transform(images, [dict(t) for t in targets])[1]])
    assert torch.cdist(decoded, boxes).min(dim=1).values.max() < 1e-3


def test_gather_at_anchors(model: FasterRCNN, synth_batch: Batch) -> None:
    out = run(model, synth_batch, 0)
    logits, present = gather_at_anchors(out.objectness, out.rpn)
    assert present.all() and torch.equal(logits[:, 0], out.rpn.logits)
    deltas, _ = gather_at_anchors(out.rpn_deltas, out.rpn, per_anchor=4)
    assert torch.equal(deltas, out.rpn.deltas)
    partial = [None, *out.objectness[1:]]  # a level without a partner
    _, present = gather_at_anchors(partial, out.rpn)
    assert torch.equal(present, out.rpn.level != 0) and (~present).any()


def test_roi_samples_are_torchvisions(model: FasterRCNN, synth_batch: Batch) -> None:
    images, targets = synth_batch
    out = run(model, synth_batch, 3)
    torch.manual_seed(3)
    image_list, resized = model.transform(images, [dict(t) for t in targets])
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features, resized)
    sampled, _, labels, reg_targets = model.roi_heads.select_training_samples(proposals, resized)
    assert all(torch.equal(a, b) for a, b in zip(sampled, out.roi.proposals))
    assert torch.equal(torch.cat(labels), out.roi.labels) and torch.equal(torch.cat(reg_targets), out.roi.targets)
    # the proposals lie in the student's resized frame
    for boxes, (h, w) in zip(out.roi.proposals, out.image_sizes):
        assert boxes[:, 0::2].max() <= w and boxes[:, 1::2].max() <= h and boxes.min() >= 0


def test_gradients_reach_the_student_from_every_exposed_tensor(model: FasterRCNN, synth_batch: Batch) -> None:
    out = run(model, synth_batch, 0)
    exposed = [out.rpn.logits, out.rpn.deltas, out.roi.class_logits, out.roi.box_regression]
    exposed += [*out.features.values(), *out.objectness, *out.rpn_deltas]
    for tensor in exposed:  # each tensor alone reaches the backbone
        model.zero_grad()
        tensor.float().mean().backward(retain_graph=True)
        first = next(model.backbone.parameters())  # the stem's convolution
        assert first.grad is not None and first.grad.abs().sum() > 0
    model.zero_grad()
    sum(t.sum() for t in exposed[:4]).backward()
    assert model.rpn.head.cls_logits.weight.grad.abs().sum() > 0
    assert model.rpn.head.bbox_pred.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_bad_inputs_are_refused(model: FasterRCNN, synth_batch: Batch) -> None:
    images, targets = synth_batch
    bad = [dict(t) for t in targets]
    bad[0]["boxes"] = bad[0]["boxes"].clone()
    bad[0]["boxes"][0, 2] = bad[0]["boxes"][0, 0]
    with pytest.raises(ValueError, match="positive height and width"):
        student_forward(model, images, bad)
    bad[0]["boxes"] = targets[0]["boxes"].reshape(-1)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        student_forward(model, images, bad)
    model.eval()
    try:
        with pytest.raises(ValueError, match="model.train"):
            student_forward(model, images, targets)
    finally:
        model.train()


def test_another_architecture_with_several_anchor_sizes_a_level(synth_batch: Batch) -> None:
    """ResNet-18, 4 FPN levels, 9 anchors a cell (all sizes at every level): same losses, same layout."""
    rpn = RPNSection(anchor_sizes=[16, 32, 64], anchor_layout="all_levels")
    torch.manual_seed(2)
    model = build_model(ModelSection(preset="small", min_size=128, max_size=192, returned_layers=[2, 3, 4], rpn=rpn),
                        len(SYNTH_CLASSES) + 1).train()
    torch.manual_seed(7)
    expected = model(*synth_batch)
    out = run(model, synth_batch, 7)
    assert len(out.objectness) == 4 and all(o.shape[1] == 9 for o in out.objectness)
    assert all(torch.equal(out.losses[k], v) for k, v in expected.items())
    logits, present = gather_at_anchors(out.objectness, out.rpn)
    assert present.all() and torch.equal(logits[:, 0], out.rpn.logits)
    assert set(out.rpn.anchor.tolist()) <= set(range(9)) and len(set(out.rpn.level.tolist())) > 1
