"""FLOPs of a detector's eval forward, counted by ``torch.utils.flop_counter.FlopCounterMode``.

The counter sees every ATen operator that runs and adds up the ones it has a formula for:
convolutions, matrix products (``mm``, ``addmm``, ``bmm``, ...) and attention. A multiply-add
counts as **2 FLOPs** (a ``Conv2d`` is ``2 * C_out * H_out * W_out * C_in * k_h * k_w / groups``;
its bias addition is not counted). Everything without a registered formula counts 0: RoIAlign,
NMS, box decoding, the resize in the input transform, normalisation layers, activations and
pooling. For a Faster R-CNN this leaves out a few percent at most of the arithmetic, but
NMS and RoIAlign can take a visible share of the *time* (see :mod:`detkd.bench.profile`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

GLOBAL_KEY = "Global"  # FlopCounterMode's key for the total over every module


def count_flops(model: nn.Module, images: Sequence[Tensor]) -> int:
    """FLOPs of one eval-mode forward of ``model`` on ``images`` (a list of ``[3, H, W]`` tensors).

    Divide by ``len(images)`` for FLOPs per image. The model is put in eval mode and run under
    ``torch.inference_mode()``; see the module docstring for what is and is not counted.
    """
    return flops_with_breakdown(model, images)[0]


def flops_with_breakdown(
    model: nn.Module, images: Sequence[Tensor], depth: int | None = 3
) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one eval forward and the FLOPs of each submodule.

    The breakdown maps dotted submodule paths (``backbone.body``, ``rpn.head``,
    ``roi_heads.box_head``, ...) to the FLOPs counted inside them, nested paths included;
    ``depth`` keeps only paths of at most that many parts (None: all).
    """
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(list(images))
    return counter.get_total_flops(), module_breakdown(counter, depth)


def module_breakdown(counter: FlopCounterMode, depth: int | None = None) -> dict[str, int]:
    """FLOPs per submodule path from a finished counter, the root's class name stripped."""
    out: dict[str, int] = {}
    for path, per_op in counter.get_flop_counts().items():
        if path == GLOBAL_KEY or "." not in path:
            continue  # the total and the root module itself
        name = path.split(".", 1)[1]
        if depth is None or name.count(".") < depth:
            out[name] = int(sum(per_op.values()))
    return out


def flop_counter() -> FlopCounterMode:
    """A silent counter to wrap any region: ``with flop_counter() as c: ...; c.get_total_flops()``."""
    return FlopCounterMode(display=False)
