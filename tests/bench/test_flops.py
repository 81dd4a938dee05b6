"""FLOPs: FlopCounterMode's count of a convolution by hand, and of whole detectors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detkd.bench.flops import count_flops, flops_with_breakdown
from detkd.bench.measure import make_images
from detkd.bench.runner import build_bench_model, held_flops_per_image, sized


def counted(module: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 4])
def test_conv_flops_are_twice_the_multiply_adds(bias: bool, groups: int) -> None:
    conv = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1, groups=groups, bias=bias)
    x = torch.rand(2, 8, 20, 30)
    h_out, w_out = 10, 15
    per_image = 2 * 16 * h_out * w_out * 8 * 3 * 3 // groups  # the bias addition is not counted
    assert counted(conv, x) == 2 * per_image


def test_linear_flops() -> None:
    assert counted(nn.Linear(5, 7), torch.rand(3, 5)) == 2 * 3 * 5 * 7


def test_flops_grow_with_the_input_size(tiny) -> None:
    flops = {}
    for size in (64, 128):
        model, _ = build_bench_model(sized(tiny(size=size), None), 10)
        flops[size] = held_flops_per_image(model.eval(), torch.device("cpu"), (128, 128), hold=True)
    # the convolutions scale ~4x with the pixels, the RoI head (held counts) stays the same
    assert 2.0 < flops[128] / flops[64] < 4.5


def test_breakdown_names_the_modules(tiny) -> None:
    model, _ = build_bench_model(sized(tiny(), None), 10)
    images = make_images(1, (64, 64))
    total, per_module = flops_with_breakdown(model, images)
    assert total == count_flops(model, images) > 0
    for name in ("backbone", "backbone.body", "backbone.fpn", "rpn", "roi_heads"):
        assert 0 < per_module[name] <= total, name
    assert per_module["backbone"] + per_module["rpn"] + per_module["roi_heads"] == total
