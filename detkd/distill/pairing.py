"""Where student and teacher feature maps meet: level pairing, grid alignment, box mapping.

Chen et al. section 6 (``docs/METHOD.md`` section 6). A student whose input is scaled by
``s = 1/2^k`` relative to the teacher's sees, at FPN stride ``sigma``, cells of ``sigma / s``
teacher-image pixels: the size of the teacher's level of stride ``sigma * 2^k``. Those levels
pair one to one ("shift" mode; k = 0 is the same-resolution identity pairing). For any other
scale each student level is paired with the teacher level of the nearest effective stride and the
teacher's map is resampled bilinearly onto the student's grid ("resample" mode).

Scale factors always come from both models' ``ImageList.image_sizes``, per image (never from the
config); torchvision pads each batch to a multiple of 32 (``size_divisible``), so only the cells
inside both models' un-padded image area are compared (the ``valid`` masks). A level's "valid
cells" are the ``ceil(h / stride) x ceil(w / stride)`` cells that touch the un-padded image.

Level names and strides are those of the backbone's output dict (torchvision's
``BackboneWithFPN``: ``"0", "1", ..., "pool"``), measured by :func:`feature_strides`; their order is
the order of the RPN head's per-level outputs and of the anchor generator's levels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detkd.errors import DetkdError

Size = tuple[int, int]  # (height, width) of an image after a model's resize

MAX_STRIDE_RATIO = math.sqrt(2.0)  # resample mode: farthest a teacher level may be, in stride


@dataclass(frozen=True)
class LevelPairing:
    """The student/teacher FPN level pairs, and how the teacher's maps are brought to the student's.

    ``pairs``: ``(student_level, teacher_level)`` names; ``mode``: ``"shift"`` or ``"resample"``;
    ``shift``: k of a ``1/2^k`` scale (shift mode, else 0); ``scale``: student size / teacher size;
    ``student_strides`` / ``teacher_strides``: ``{level: stride}`` in each model's input pixels.
    """

    pairs: tuple[tuple[str, str], ...]
    mode: str
    shift: int
    scale: float
    student_strides: Mapping[str, int]
    teacher_strides: Mapping[str, int]

    def strides(self, student_level: str, teacher_level: str) -> tuple[int, int]:
        """``(stride_s, stride_t)`` of a pair, as :func:`align_teacher_map` takes them."""
        return self.student_strides[student_level], self.teacher_strides[teacher_level]

    def index_pairs(self) -> tuple[tuple[int, int], ...]:
        """The pairs as level indices (positions in each backbone's output / RPN head's lists)."""
        s_index = {name: i for i, name in enumerate(self.student_strides)}
        t_index = {name: i for i, name in enumerate(self.teacher_strides)}
        return tuple((s_index[s], t_index[t]) for s, t in self.pairs)

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


def feature_strides(model: nn.Module, size: int = 256) -> dict[str, int]:
    """``{level name: stride}`` of a detector's (or a bare backbone's) feature maps, in order."""
    return feature_layout(model, size)[0]


def feature_layout(model: nn.Module, size: int = 256) -> tuple[dict[str, int], dict[str, int]]:
    """``({level: stride}, {level: channels})`` of a detector's (or a bare backbone's) feature maps.

    Measured once on a ``size`` x ``size`` zero image, in ``no_grad`` and eval mode (so norm
    statistics are untouched), then the module's training flag is restored.
    """
    backbone = getattr(model, "backbone", model)
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype))
    backbone.train(was_training)
    strides, channels = {}, {}
    for name, f in feats.items():
        if size % f.shape[-1] or size % f.shape[-2]:
            raise ValueError(f"feature_layout: probe size {size} is not a multiple of level {name}'s stride")
        strides[name], channels[name] = size // f.shape[-1], f.shape[1]
    return strides, channels


def scale_factors(student_sizes: Sequence[Size], teacher_sizes: Sequence[Size]) -> Tensor:
    """``[B, 2]`` float64, per image ``(sy, sx)`` = teacher size / student size, from both ``image_sizes``."""
    if len(student_sizes) != len(teacher_sizes):
        raise ValueError(f"{len(student_sizes)} student images but {len(teacher_sizes)} teacher images")
    s = torch.tensor([tuple(x) for x in student_sizes], dtype=torch.float64)
    t = torch.tensor([tuple(x) for x in teacher_sizes], dtype=torch.float64)
    return t / s


def student_scale(scales: Tensor) -> float:
    """The student's scale (student / teacher size) of a batch: the geometric mean of ``1 / scales``."""
    return float(torch.exp(-torch.log(scales).mean()))


def pair_levels(student_strides: Mapping[str, int], teacher_strides: Mapping[str, int], scale: float,
                tol: float = 0.05) -> LevelPairing:
    """Pair student levels with teacher levels for a student at ``scale`` (student / teacher size).

    ``tol``: how far ``log2(1 / scale)`` may be from an integer k for the exact level shift.
    Raises:
        DetkdError: no student level has a partner (names both level sets and the scale).
    """
    if scale <= 0:
        raise ValueError(f"pair_levels: scale must be positive, got {scale}")
    k = math.log2(1.0 / scale)
    by_stride = {stride: name for name, stride in sorted(teacher_strides.items(), key=lambda kv: -kv[1])}
    if abs(k - round(k)) < tol:
        shift, mode = round(k), "shift"
        pairs = tuple((name, by_stride[s * 2.0**shift]) for name, s in student_strides.items()
                      if s * 2.0**shift in by_stride)
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
    """``(name, teacher level)`` of the nearest stride in log scale, or None if none is within sqrt(2)."""
    best = min(teacher_strides.items(), key=lambda kv: abs(math.log(kv[1] / effective_stride)))
    ratio = best[1] / effective_stride
    return (name, best[0]) if 1 / MAX_STRIDE_RATIO <= ratio <= MAX_STRIDE_RATIO else None


def rpn_pairs(pairing: LevelPairing, student_anchors: AnchorGenerator, teacher_anchors: AnchorGenerator,
              tol: float = 0.05) -> tuple[tuple[str, str], ...]:
    """The pairs whose RPN outputs compare channel for channel: the same anchors at every cell.

    Same aspect ratios in the same order, and anchor sizes that agree in teacher pixels (student
    size / scale = teacher size, within ``tol`` relative in shift mode, within sqrt(2) when
    resampling). torchvision orders a cell's anchors ratio-major (``A = ratios x sizes``), so equal
    lists mean channel a of the student's objectness is channel a of the teacher's.
    """
    s_levels, t_levels = list(pairing.student_strides), list(pairing.teacher_strides)
    limit = 1 + tol if pairing.mode == "shift" else MAX_STRIDE_RATIO
    kept = []
    for s_name, t_name in pairing.pairs:
        i, j = s_levels.index(s_name), t_levels.index(t_name)
        s_sizes, t_sizes = student_anchors.sizes[i], teacher_anchors.sizes[j]
        same_ratios = list(student_anchors.aspect_ratios[i]) == list(teacher_anchors.aspect_ratios[j])
        if same_ratios and len(s_sizes) == len(t_sizes) and all(
            1 / limit <= (a / pairing.scale) / b <= limit for a, b in zip(s_sizes, t_sizes)
        ):
            kept.append((s_name, t_name))
    return tuple(kept)


def valid_cells(sizes: Sequence[Size], stride: int, grid: Size | None = None) -> list[Size]:
    """Per image, the ``(rows, cols)`` of a stride-``stride`` grid that touch the un-padded image
    (at most ``grid``, the map's ``(H, W)``, where given)."""
    cells = [(math.ceil(h / stride), math.ceil(w / stride)) for h, w in sizes]
    if grid is not None:
        cells = [(min(r, grid[0]), min(c, grid[1])) for r, c in cells]
    return cells


def cell_mask(cells: Sequence[Size], shape: Size, device: torch.device) -> Tensor:
    """``[B, 1, H, W]`` bool, true on the first ``rows x cols`` cells of each image."""
    limits = torch.tensor(list(cells), device=device).reshape(-1, 2)  # [B, 2] (rows, cols)
    rows = torch.arange(shape[0], device=device)[None, :, None] < limits[:, 0, None, None]
    cols = torch.arange(shape[1], device=device)[None, None, :] < limits[:, 1, None, None]
    return (rows & cols)[:, None]


def align_teacher_map(teacher_map: Tensor, student_shape: Size, student_sizes: Sequence[Size],
                      teacher_sizes: Sequence[Size], stride_s: int, stride_t: int, mode: str) -> tuple[Tensor, Tensor]:
    """The teacher's map on the student's grid, and where the two may be compared.

    "shift": the paired grids cover the same image cells, so the teacher's grid is cropped (or
    zero-padded) to the student's; they may differ by a rounding cell. Should an image's grids
    differ by more (its scale is not ``1/2^k``, e.g. ``max_size`` clamped one model only), the
    batch is resampled instead. "resample": per image, each student cell centre is mapped into the
    teacher's grid by the ratio of the two ``image_sizes`` and the teacher's map is sampled there
    bilinearly (clamped to its un-padded cells).

    Args:
        teacher_map: ``[B, C, Ht, Wt]`` (features, objectness ``[B, A, ...]``, deltas ``[B, 4A, ...]``).
        student_shape: ``(Hs, Ws)`` of the paired student map.
        student_sizes, teacher_sizes: each model's ``image_sizes``.
        stride_s, stride_t: the strides of the two levels; mode: the pairing's mode.
    Returns:
        ``aligned`` ``[B, C, Hs, Ws]`` (zero outside ``valid``) and ``valid`` ``[B, 1, Hs, Ws]``
        bool: the cells inside the un-padded image of both models.
    """
    student_shape = (int(student_shape[0]), int(student_shape[1]))
    cells_s = valid_cells(student_sizes, stride_s, student_shape)
    cells_t = valid_cells(teacher_sizes, stride_t, tuple(teacher_map.shape[-2:]))
    agree = all(abs(a - b) <= 1 for cs, ct in zip(cells_s, cells_t) for a, b in zip(cs, ct))
    if mode == "shift" and agree:
        cells = [(min(rs, rt), min(cs, ct)) for (rs, cs), (rt, ct) in zip(cells_s, cells_t)]
        h, w = min(student_shape[0], teacher_map.shape[-2]), min(student_shape[1], teacher_map.shape[-1])
        aligned = teacher_map.new_zeros(*teacher_map.shape[:2], *student_shape)
        aligned[..., :h, :w] = teacher_map[..., :h, :w]
    elif mode in ("shift", "resample"):
        cells = cells_s
        scales = scale_factors(student_sizes, teacher_sizes)
        aligned = resample(teacher_map, student_shape, scales, stride_s / stride_t, cells_t)
    else:
        raise ValueError(f"align_teacher_map: unknown mode {mode!r} (shift, resample)")
    valid = cell_mask(cells, student_shape, teacher_map.device)
    return aligned * valid.to(aligned.dtype), valid


def resample(teacher_map: Tensor, student_shape: Size, scales: Tensor, stride_ratio: float,
             teacher_cells: Sequence[Size]) -> Tensor:
    """Bilinear samples of ``teacher_map`` ``[B, C, Ht, Wt]`` at the student cell centres ``[B, C, Hs, Ws]``.

    Student cell ``(r, c)`` has its centre at ``(r + 0.5) * stride_s`` student pixels, i.e.
    ``(r + 0.5) * stride_s * sy`` teacher pixels, i.e. teacher cell coordinate
    ``(r + 0.5) * (stride_s / stride_t) * sy - 0.5`` (cell centres at integers); clamped to the
    teacher's valid cells. ``scales``: ``[B, 2]`` (sy, sx) teacher / student.
    """
    device, dtype = teacher_map.device, teacher_map.dtype
    ht, wt = teacher_map.shape[-2:]
    scales = scales.to(device=device, dtype=torch.float64)
    coords = []
    for axis, (n, size) in enumerate(zip(student_shape, (ht, wt))):
        centre = (torch.arange(n, device=device, dtype=torch.float64) + 0.5) * stride_ratio
        pos = centre[None, :] * scales[:, axis : axis + 1] - 0.5  # [B, n] in teacher cells
        last = torch.tensor([cells[axis] - 1 for cells in teacher_cells], device=device, dtype=torch.float64)
        pos = torch.minimum(pos.clamp(min=0.0), last[:, None])
        coords.append((2 * pos + 1) / size - 1)  # grid_sample's align_corners=False normalisation
    gy, gx = coords
    b, hs, ws = teacher_map.shape[0], *student_shape
    grid = torch.stack((gx[:, None, :].expand(b, hs, ws), gy[:, :, None].expand(b, hs, ws)), dim=-1)
    return F.grid_sample(teacher_map, grid.to(dtype), mode="bilinear", padding_mode="border", align_corners=False)


def map_boxes_to_teacher(boxes: Sequence[Tensor], scales: Tensor) -> list[Tensor]:
    """Boxes ``[N_i, 4]`` xyxy in the student's frame -> the teacher's (x times sx, y times sy).

    ``scales``: ``[B, 2]`` (sy, sx) from :func:`scale_factors`; the result keeps each box's dtype
    and device (it is a constant: torchvision's proposals carry no grad).
    """
    if len(boxes) != len(scales):
        raise ValueError(f"{len(boxes)} images of boxes but {len(scales)} scale factors")
    return [box * box.new_tensor([sx, sy, sx, sy]) for box, (sy, sx) in zip(boxes, scales.tolist())]
