"""Where student and teacher feature maps meet: level pairing, grid alignment, box mapping.

Chen et al. section 6 (``docs/method.md`` section 6). A student whose input is scaled by
``s = 1/2^k`` relative to the teacher's sees, at FPN stride ``sigma``, cells of ``sigma / s``
teacher-image pixels: the size of the teacher's level of stride ``sigma * 2^k``. Those levels
pair one to one ("shift" mode; k = 0 is the same-resolution identity pairing). For any other
scale each student level is paired with the teacher level of the nearest effective stride and the
teacher's map is resampled bilinearly onto the student's grid ("resample" mode).

Scale factors always come from both models' ``ImageList.image_sizes``, per image; torchvision
pads each batch to a multiple of 32, so only the cells inside both models' un-padded image area
are compared (the ``valid`` masks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkd.errors import DetkdError

Size = tuple[int, int]  # (height, width) of an image after a model's resize

MAX_STRIDE_RATIO = math.sqrt(2.0)  # resample mode: farthest a teacher level may be, in stride


@dataclass(frozen=True)
class LevelPairing:
    """The student/teacher FPN level pairs, and how the teacher's maps are brought to the student's.

    ``pairs``: ``(student_level, teacher_level)`` names; ``mode``: ``"shift"`` or ``"resample"``;
    ``shift``: k of a ``1/2^k`` scale (shift mode); ``scale``: student size / teacher size.
    """

    pairs: tuple[tuple[str, str], ...]
    mode: str
    shift: int
    scale: float
    student_strides: Mapping[str, int]
    teacher_strides: Mapping[str, int]

    def describe(self) -> str:
        """One line for the run log."""
        pairs = ", ".join(f"{s}->{t}" for s, t in self.pairs)
        skipped = [name for name in self.student_strides if name not in dict(self.pairs)]
        rest = f"; student levels without a partner: {', '.join(skipped)}" if skipped else ""
        if self.mode == "shift":
            head = f"level shift k={self.shift} (student at scale {self.scale:.3g})"
        else:
            head = f"bilinear resampling of teacher maps (student at scale {self.scale:.3g}, not 1/2^k)"
        return f"{head}: student->teacher {pairs}{rest}"


def feature_strides(backbone: nn.Module, size: int = 256) -> dict[str, int]:
    """``{level name: stride}`` of a backbone's feature maps, measured on a ``size`` x ``size`` probe."""
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype))
    backbone.train(was_training)
    return {name: round(size / f.shape[-1]) for name, f in feats.items()}


def scale_factors(student_sizes: Sequence[Size], teacher_sizes: Sequence[Size]) -> Tensor:
    """``[B, 2]`` per image ``(sy, sx)`` = teacher size / student size, from both ``image_sizes``."""
    if len(student_sizes) != len(teacher_sizes):
        raise ValueError(f"{len(student_sizes)} student images but {len(teacher_sizes)} teacher images")
    s = torch.tensor(student_sizes, dtype=torch.float64)
    t = torch.tensor(teacher_sizes, dtype=torch.float64)
    return t / s


def pair_levels(student_strides: Mapping[str, int], teacher_strides: Mapping[str, int], scale: float,
                tol: float = 0.05) -> LevelPairing:
    """Pair student levels with teacher levels for a student at ``scale`` (student / teacher size).

    Raises DetkdError when no student level has a partner.
    """
    k = math.log2(1.0 / scale)
    by_stride = {stride: name for name, stride in sorted(teacher_strides.items(), key=lambda kv: -kv[1])}
    if abs(k - round(k)) < tol:
        shift = round(k)
        pairs = tuple((name, by_stride[s * 2**shift]) for name, s in student_strides.items()
                      if s * 2**shift in by_stride)
        mode = "shift"
    else:
        shift, mode = 0, "resample"
        pairs = tuple(p for p in (nearest_level(n, s / scale, teacher_strides) for n, s in student_strides.items()) if p)
    if not pairs:
        raise DetkdError(
            f"no teacher FPN level pairs with any student level: student strides {dict(student_strides)} at scale "
            f"{scale:.3g} (cells of {sorted({round(s / scale, 1) for s in student_strides.values()})} teacher "
            f"pixels), teacher strides {dict(teacher_strides)}"
        )
    return LevelPairing(pairs, mode, shift, scale, dict(student_strides), dict(teacher_strides))


def nearest_level(name: str, effective_stride: float, teacher_strides: Mapping[str, int]) -> tuple[str, str] | None:
    """``(name, teacher level)`` of the nearest stride in log scale, or None if none is close."""
    best = min(teacher_strides.items(), key=lambda kv: abs(math.log(kv[1] / effective_stride)))
    ratio = best[1] / effective_stride
    return (name, best[0]) if 1 / MAX_STRIDE_RATIO <= ratio <= MAX_STRIDE_RATIO else None


def valid_cells(sizes: Sequence[Size], stride: int) -> list[Size]:
    """Per image, the ``(rows, cols)`` of a stride-``stride`` grid that lie on the un-padded image."""
    return [(math.ceil(h / stride), math.ceil(w / stride)) for h, w in sizes]


def align_teacher_map(teacher_map: Tensor, student_shape: Size, student_sizes: Sequence[Size],
                      teacher_sizes: Sequence[Size], stride_s: int, stride_t: int, mode: str) -> tuple[Tensor, Tensor]:
    """The teacher's map on the student's grid, and where the two may be compared.

    Args:
        teacher_map: ``[B, C, Ht, Wt]`` (features, objectness ``[B, A, ...]``, deltas ``[B, 4A, ...]``).
        student_shape: ``(Hs, Ws)`` of the paired student map.
        student_sizes, teacher_sizes: each model's ``image_sizes``.
        stride_s, stride_t: the strides of the two levels; mode: the pairing's mode.
    Returns:
        ``aligned`` ``[B, C, Hs, Ws]`` (zero outside the valid area) and ``valid`` ``[B, 1, Hs, Ws]`` bool.
    """
    b, c = teacher_map.shape[:2]
    aligned = teacher_map.new_zeros(b, c, *student_shape)
    valid = torch.zeros(b, 1, *student_shape, dtype=torch.bool, device=teacher_map.device)
    cells_s = valid_cells(student_sizes, stride_s)
    cells_t = valid_cells(teacher_sizes, stride_t)
    for i, ((hs, ws), (ht, wt)) in enumerate(zip(cells_s, cells_t)):
        hs, ws = min(hs, student_shape[0]), min(ws, student_shape[1])
        region = teacher_map[i : i + 1, :, :ht, :wt]
        if mode == "shift":
            hs, ws = min(hs, ht), min(ws, wt)  # the grids agree up to a rounding cell
            aligned[i, :, :hs, :ws] = region[0, :, :hs, :ws]
        else:
            aligned[i, :, :hs, :ws] = F.interpolate(region, size=(hs, ws), mode="bilinear", align_corners=False)[0]
        valid[i, :, :hs, :ws] = True
    return aligned, valid


def map_boxes_to_teacher(boxes: Sequence[Tensor], scales: Tensor) -> list[Tensor]:
    """Boxes ``[Ni, 4]`` xyxy in the student's frame -> the teacher's, with ``scales`` ``[B, 2]`` (sy, sx)."""
    out = []
    for box, (sy, sx) in zip(boxes, scales.tolist()):
        out.append(box * box.new_tensor([sx, sy, sx, sy]))
    return out
