"""Speed rows of tiny untrained models, held counts and the stage profile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detkd.bench.hold import hold_counts, pad_to
from detkd.bench.measure import make_images, median_p90_ms, resolve_device
from detkd.bench.profile import STAGES, format_profiles, profile_model
from detkd.bench.report import CHECKPOINT, HELD
from detkd.bench.runner import bench_model, build_bench_model, measure_model, sized
from detkd.errors import DetkdError


def proposals_and_detections(model, images) -> tuple[list[int], list[int]]:
    """Proposals out of the RPN and final detections per image, in eval mode."""
    model.eval()
    with torch.inference_mode():
        image_list, _ = model.transform(images)
        proposals, _ = model.rpn(image_list, model.backbone(image_list.tensors))
        detections = model(images)
    return [len(p) for p in proposals], [len(d["boxes"]) for d in detections]


def test_pad_repeats_the_kept_items_cyclically() -> None:
    kept = torch.tensor([10.0, 20.0, 30.0])
    assert pad_to([kept], 7, [torch.zeros(1)])[0].tolist() == [10, 20, 30, 10, 20, 30, 10]
    assert pad_to([kept], 2, [torch.zeros(1)])[0].tolist() == [10, 20]
    assert pad_to([kept[:0]], 3, [torch.ones(1)])[0].tolist() == [1, 1, 1]


@pytest.mark.parametrize("starve", [False, True])
def test_hold_counts_fixes_proposals_and_detections(tiny, starve: bool) -> None:
    cfg = tiny(size=96, proposals=60, detections=25)
    if starve:  # at most 5 levels x 10 proposals, and no detection passes the score threshold
        cfg.rpn.pre_nms_top_n_test, cfg.rpn.nms_thresh, cfg.roi.score_thresh = 10, 0.1, 1.0
    model, _ = build_bench_model(sized(cfg, None), 10)
    images = make_images(2, (96, 128), seed=3)
    free = proposals_and_detections(model, images)
    with hold_counts(model):
        held = proposals_and_detections(model, images)
    assert held == ([60, 60], [25, 25])
    assert proposals_and_detections(model, images) == free  # restored on exit
    assert "filter_proposals" not in vars(model.rpn) and "postprocess_detections" not in vars(model.roi_heads)
    if starve:
        assert max(free[0]) < 60 and free[1] == [0, 0]


def test_rows_are_sane(tiny, fast) -> None:
    rows = {preset: bench_model(tiny(preset), 10, preset, options=fast) for preset in ("tiny", "small")}
    for preset, row in rows.items():
        assert row.mode == HELD and row.checkpoint is None and row.device == "cpu" and row.threads == 1
        assert (row.min_size, row.max_size, row.input_hw, row.raw_hw) == (64, 64, "48x64", "96x128")
        assert row.latency_ms > 0 and row.latency_ms_p90 >= row.latency_ms
        assert row.img_per_s_b1 == pytest.approx(1000 / row.latency_ms)
        assert row.img_per_s_b8 > 0 and row.gflops > 0
        assert row.peak_mem_mb is None or row.peak_mem_mb > 10
        model, _ = build_bench_model(sized(tiny(preset), None), 10)
        assert row.params == sum(p.numel() for p in model.parameters())
    assert rows["small"].params > rows["tiny"].params
    assert rows["small"].gflops > rows["tiny"].gflops


def test_checkpoint_gives_real_counts_and_its_classes(tiny, fast, tmp_path) -> None:
    model, _ = build_bench_model(sized(tiny(), None), 4)
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "classes": ["a", "b", "c"]}, path)
    row = bench_model(tiny(), None, "trained", checkpoint=str(path), options=fast)
    assert (row.mode, row.num_classes, row.checkpoint) == (CHECKPOINT, 4, str(path))
    held = bench_model(tiny(), None, "trained", checkpoint=str(path), options=dataclasses.replace(fast, hold=True))
    assert held.mode == HELD
    with pytest.raises(DetkdError, match="do not fit"):  # 4 classes in the file, 'small' is another model
        bench_model(tiny("small"), None, "other", checkpoint=str(path), options=fast)


def test_stage_profile_adds_up(tiny) -> None:
    model, _ = build_bench_model(sized(tiny(size=96), None), 10)
    profile = profile_model(model, torch.device("cpu"), "tiny", runs=3, warmup=1, input_hw=(96, 128), hold=True)
    assert [s.stage for s in profile.stages] == list(STAGES)
    assert all(s.ms > 0 for s in profile.stages)
    assert sum(s.share for s in profile.stages) == pytest.approx(1.0)
    assert 0.25 < profile.total_ms / profile.forward_ms < 4.0  # timed twice, under whatever load
    gflops = {s.stage: s.gflops for s in profile.stages}
    assert gflops["backbone"] > 0 and gflops["box_head"] > 0 and gflops["roi_align"] is None
    table = format_profiles([profile, profile])
    assert all(stage in table for stage in STAGES) and "1.00x" in table


def test_sweep_sizes_and_profile_rows(tiny, fast) -> None:
    cfg = dataclasses.replace(tiny(size=64), max_size=96)
    row, profile = measure_model(cfg, 10, "tiny", options=dataclasses.replace(fast, profile=True), size=32)
    assert (row.min_size, row.max_size) == (32, 48) and profile is not None and profile.name == "tiny@32"


def test_median_p90_and_device_errors() -> None:
    assert median_p90_ms([0.001, 0.002, 0.003, 0.010]) == pytest.approx((2.5, 7.9))
    with pytest.raises(DetkdError, match="unknown device"):
        resolve_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DetkdError, match="CUDA is not available"):
            resolve_device("cuda")
