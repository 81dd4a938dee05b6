"""Where an eval forward's time goes: a Faster R-CNN run stage by stage, each stage timed.

The stages are run explicitly, in the order ``GeneralizedRCNN.forward`` runs them (torchvision
0.29), so their sum is the forward minus Python glue:

============== ===============================================================================
transform      ``model.transform``: resize to min_size/max_size, normalise, pad
backbone       ``backbone.body``: the classifier trunk
fpn            ``backbone.fpn``: the feature pyramid
rpn_head       ``rpn.head`` (objectness and deltas on every level) and ``rpn.anchor_generator``
rpn_proposals  box decoding, per-level top-k, NMS (``rpn.filter_proposals``)
roi_align      ``roi_heads.box_roi_pool`` (MultiScaleRoIAlign)
box_head       ``roi_heads.box_head`` and ``roi_heads.box_predictor``
postprocess    ``roi_heads.postprocess_detections`` (score threshold, per-class NMS) and
               ``transform.postprocess`` (boxes back to the input image's frame)
============== ===============================================================================

Each stage's time is the median over ``runs`` passes (the device synchronised around every
stage on CUDA); the full forward ``model(images)`` is timed in the same passes for comparison.
A separate untimed pass counts each stage's FLOPs (:mod:`detkd.bench.flops`; RoIAlign, NMS and
the resize count nothing, shown as ``-``). Under ``hold`` the counts are held
(:func:`~detkd.bench.hold.hold_counts`), as in the speed table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.rpn import concat_box_prediction_layers

from detkd.bench.flops import flop_counter
from detkd.bench.measure import DEFAULT_INPUT, forward_context, make_images, synchronize, timed
from detkd.utils.formatting import markdown_table, num, pct

STAGES = ("transform", "backbone", "fpn", "rpn_head", "rpn_proposals", "roi_align", "box_head", "postprocess")
Around = Callable[[str], AbstractContextManager[Any]]


class StageTime(NamedTuple):
    """One stage: median milliseconds, share of the sum of stages, GFLOPs (None: none counted)."""

    stage: str
    ms: float
    share: float
    gflops: float | None


@dataclass
class StageProfile:
    """The stages of one model's forward and the full forward's median time."""

    name: str
    stages: list[StageTime] = field(default_factory=list)
    forward_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        """The sum of the stages' medians."""
        return sum(s.ms for s in self.stages)


def run_rpn(model: FasterRCNN, image_list: Any, features: dict[str, Tensor], around: Around) -> list[Tensor]:
    """The RPN as ``RegionProposalNetwork.forward`` runs it in eval mode, in two stages."""
    rpn, feature_list = model.rpn, list(features.values())
    with around("rpn_head"):
        objectness, deltas = rpn.head(feature_list)
        anchors = rpn.anchor_generator(image_list, feature_list)
    with around("rpn_proposals"):
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, objectness, image_list.image_sizes, per_level)
    return boxes


def run_stages(model: FasterRCNN, images: Sequence[Tensor], around: Around) -> list[dict[str, Tensor]]:
    """One eval forward of ``model``, each stage of :data:`STAGES` inside ``around(stage)``;
    returns the detections as ``model(images)`` does."""
    original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    with around("transform"):
        image_list, _ = model.transform(list(images))
    with around("backbone"):
        body = model.backbone.body(image_list.tensors)
    with around("fpn"):
        features = model.backbone.fpn(body)
    proposals = run_rpn(model, image_list, features, around)
    roi, sizes = model.roi_heads, image_list.image_sizes
    with around("roi_align"):
        box_features = roi.box_roi_pool(features, proposals, sizes)
    with around("box_head"):
        class_logits, box_regression = roi.box_predictor(roi.box_head(box_features))
    with around("postprocess"):
        boxes, scores, labels = roi.postprocess_detections(class_logits, box_regression, proposals, sizes)
        detections = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, labels)]
        detections = model.transform.postprocess(detections, sizes, original_sizes)
    return detections


def stage_timer(device: torch.device, seconds: dict[str, list[float]]) -> Around:
    """An ``around`` that appends each stage's seconds (device synchronised) to ``seconds``."""

    @contextmanager
    def around(stage: str) -> Iterator[None]:
        synchronize(device)
        start = time.perf_counter()
        yield
        synchronize(device)
        seconds.setdefault(stage, []).append(time.perf_counter() - start)

    return around


def stage_flops(model: FasterRCNN, images: Sequence[Tensor]) -> dict[str, int]:
    """FLOPs counted inside each stage of one forward (untimed)."""
    counts: dict[str, int] = {}

    @contextmanager
    def around(stage: str) -> Iterator[None]:
        with flop_counter() as counter:
            yield
        counts[stage] = counter.get_total_flops()

    run_stages(model, images, around)
    return counts


def profile_model(model: FasterRCNN, device: torch.device, name: str = "model", runs: int = 5,
                  warmup: int = 1, input_hw: tuple[int, int] = DEFAULT_INPUT, amp: str | None = None,
                  hold: bool = False) -> StageProfile:
    """The stage profile of ``model`` (on ``device``) at batch 1 on the benchmark's input image."""
    images = make_images(1, input_hw, device=device)
    seconds: dict[str, list[float]] = {}
    forward: list[float] = []
    with forward_context(model, device, amp, hold):
        for _ in range(warmup):
            run_stages(model, images, lambda stage: _nothing())
        for _ in range(max(1, runs)):
            run_stages(model, images, stage_timer(device, seconds))
            forward.append(timed(lambda: model(images), device))
        flops = stage_flops(model, images)
    medians = {stage: 1000.0 * statistics.median(seconds[stage]) for stage in STAGES}
    total = sum(medians.values()) or 1.0
    stages = [StageTime(s, medians[s], medians[s] / total, flops.get(s, 0) / 1e9 or None) for s in STAGES]
    return StageProfile(name, stages, 1000.0 * statistics.median(forward))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def format_profile(profile: StageProfile) -> str:
    """One model's stage profile as a markdown table, with the sum and the full forward."""
    counted = sum(s.gflops or 0.0 for s in profile.stages)
    rows = [[s.stage, f"{s.ms:.2f}", pct(s.share, suffix="%"), num(s.gflops, ".3f")] for s in profile.stages]
    rows.append(["sum of stages", f"{profile.total_ms:.2f}", "100.0%", f"{counted:.3f}"])
    lines = [f"stage profile of {profile.name} (median ms at batch 1)", "",
             *markdown_table(["stage", "ms", "share", "GFLOPs"], rows, right_from=1)]
    lines.append(f"| full forward | {profile.forward_ms:.2f} | | |")  # its share and GFLOPs cells left blank
    return "\n".join(lines)


def format_profiles(profiles: Sequence[StageProfile]) -> str:
    """Several profiles side by side (ms, share, GFLOPs of each), with the ratio of the first
    profile's ms to each other's per stage (e.g. teacher / student: the student's speed-up)."""
    if len(profiles) == 1:
        return format_profile(profiles[0])
    ref, others = profiles[0], profiles[1:]
    header = ["stage"] + [f"{p.name} {col}" for p in profiles for col in ("ms", "share", "GFLOPs")]
    header += [f"{ref.name} / {p.name}" for p in others]
    rows = []
    for i, stage in enumerate(STAGES):
        cells = [stage]
        for p in profiles:
            s = p.stages[i]
            cells += [f"{s.ms:.2f}", pct(s.share, suffix="%"), num(s.gflops, ".3f")]
        rows.append(cells + [_ratio(ref.stages[i].ms, p.stages[i].ms) for p in others])
    for label, value in (("sum of stages", lambda p: p.total_ms), ("full forward", lambda p: p.forward_ms)):
        cells = [label] + [c for p in profiles for c in (f"{value(p):.2f}", "", "")]
        rows.append(cells + [_ratio(value(ref), value(p)) for p in others])
    lines = [f"stage profiles (median ms at batch 1; ratio: {ref.name}'s ms over each other's)", "",
             *markdown_table(header, rows, right_from=1)]
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"
