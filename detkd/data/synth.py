"""The embedded dataset: coloured shapes on textured backgrounds, generated from a seed.

detkd's demo and fast tests run on this data; nothing is downloaded. It is written to disk in
all three layouts detkd reads (VOC, KITTI, COCO), so every reader is exercised end to end.

What an image holds
-------------------
- **Size**: one of 320x320, 384x288 or 288x384 pixels (RGB, PNG), so CPU training is fast.
- **Background**: a two-colour linear gradient plus one or two textures (sinusoidal stripes,
  low-frequency colour blotches, a grid of thin lines); at the end the whole image is blurred
  slightly (sigma 0.3-0.8 px) and gets Gaussian pixel noise (sigma 1.5-6).
- **Objects**: 4 to 12 per image (about 8 on average) of K = 9 classes (:data:`SYNTH_CLASSES`,
  alphabetical), built as four deliberately similar pairs plus one loner, so that a teacher's
  soft labels carry information: ``circle``/``ellipse`` (aspect 1 vs 0.45-0.72, any rotation),
  ``square``/``rectangle`` (aspect 1 vs 0.40-0.68; tilted up to 25 degrees, rectangles upright
  or lying), ``pentagon``/``hexagon`` (regular polygons, nearly round when small) and
  ``cross_red``/``cross_orange`` (the same plus shape, told apart by hue only: 350-8 vs 20-32
  degrees), and ``triangle``. The shape classes take any colour (kept apart from the
  background beneath), so colour never identifies them; every object is flat-coloured under a
  random brightness ramp of up to +-25 %.
- **Scales**: an object's extent (diameter, or longest side before rotation) is log-uniform in
  8..128 px, so each octave 8-16, 16-32, 32-64, 64-128 is drawn about equally often (at most
  two objects over 64 px per image). About 60 % of the boxes are COCO "small" (area < 32^2),
  35 % medium, 4 % large; half are under 25 px tall. Small objects of a similar pair are hard
  to tell apart even at full resolution, and more so for a low-resolution student.
- **Occlusion**: objects are painted in order, later ones over earlier ones; about a third are
  placed next to an earlier object (30-90 % of the sum of their radii away) so that they
  overlap. A placement is rejected (and retried) when it would leave an earlier object with
  less than 20 % of its in-image pixels visible, so every annotated object can be seen. About
  a quarter of the objects are partly covered, 5 % by half or more.
- **Truncation**: centres may fall up to a quarter of the extent outside the image; a placement
  is rejected when more than half the shape falls outside or its clipped box is under 3 px
  wide or tall. About 17 % of the objects touch the border.
- **Clutter** (never annotated): 4-13 jagged irregular blobs (up to 60 px, random colour),
  line segments, arcs and clumps of tiny dots painted before the objects, and up to 3 thin
  lines and arcs painted over them. The blobs are the hard negatives: coloured like objects,
  but with no class's outline.

Boxes and flags
---------------
Shapes are rasterised as binary masks (``cv2.fillPoly`` with sub-pixel vertices) and painted
through the masks. An object's box is the tight box of its whole (amodal) mask clipped to the
image, in integer pixels, as detkd's continuous ``xyxy``: ``x1, y1`` inclusive, ``x2, y2``
exclusive, so ``width = x2 - x1`` (see :mod:`detkd.data.records`). Integer boxes make the round
trip through every format exact. Per object the generator also measures

- ``truncated``: the fraction of the whole shape outside the image (0..0.5, 2 decimals);
- ``visible``: the fraction of its in-image pixels that nothing painted later covers (0.2..1;
  the thin lines painted over the objects could take a hair below 0.2, in practice never).

Each format gets them as it expects: VOC ``truncated`` = 1 when the fraction is above 0 and
``difficult`` = 1 when ``visible < 0.35`` (heavily occluded; about 2-3 % of the objects);
KITTI ``truncated`` = the fraction and ``occluded`` = 0 (visible >= 0.95), 1 (>= 0.5) or 2
(less). No KITTI ``DontCare`` regions and no COCO crowd regions are written: the three
formats carry exactly the same objects and no ignore regions, so they compare one to one.
COCO ``area`` is the box area ``w * h`` (not the mask area), so COCO's small/medium/large
split follows the boxes.

Layout (``OUT`` = the output folder)
------------------------------------
- ``OUT/voc/JPEGImages/<stem>.png``, ``OUT/voc/Annotations/<stem>.xml`` (1-based inclusive
  ``bndbox``: ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2``),
  ``OUT/voc/ImageSets/Main/{train,test}.txt``;
- ``OUT/kitti/image_2/<stem>.png``, ``OUT/kitti/label_2/<stem>.txt`` (15 fields, 2D only:
  ``type truncated occluded -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10``),
  ``OUT/kitti/ImageSets/{train,test}.txt``;
- ``OUT/coco/{train,test}/<stem>.png``, ``OUT/coco/annotations/instances_{train,test}.json``
  (category ids 1..K in :data:`SYNTH_CLASSES` order, image id ``int(stem)``, annotation ids
  from 1 per file, ``bbox = [x1, y1, w, h]``);
- ``OUT/synth.json`` (the generation parameters and counts) and ``OUT/README.txt``.

Each PNG is encoded once and hard-linked (copied where links fail) into the other layouts.
KITTI's difficulty levels ignore ground truth under 25 px tall, about half of this data, so
KITTI-style AP here measures the medium and large objects only.

Determinism and splits
----------------------
Stems are ``000001``, ``000002``, ... (1-based, so no COCO id is 0). Image ``i`` (0-based) is
drawn from ``np.random.default_rng([seed, i])`` only, so it does not depend on the number of
images, the worker count or the order of work: the first 30 images of a 1,000-image set equal a
30-image set, and the same seed gives byte-identical files. Every fifth image (stems
``000005``, ``000010``, ...) is in ``test`` (20 %), the rest in ``train``.

Cost
----
1,000 images take about 13 s of one core (drawing about 9 ms an image, the rest PNG encoding
and file writes) and about 200 MB on disk (the noise makes PNGs incompressible, ~200 KB
each). ``workers=2`` draws in two processes (``spawn``: call it from a ``__main__``-guarded
script) for about 7 s; the files are identical either way.
"""

from __future__ import annotations

import colorsys
import contextlib
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from detkd.errors import DetkdError

# Alphabetical, so that the order detkd's readers infer by default (sorted names) gives every
# class the same label in all three formats, equal to its COCO category id.
SYNTH_CLASSES: tuple[str, ...] = (
    "circle",
    "cross_orange",
    "cross_red",
    "ellipse",
    "hexagon",
    "pentagon",
    "rectangle",
    "square",
    "triangle",
)
SYNTH_VERSION = 1
SPLITS = ("train", "test")
IMAGE_SIZES = ((320, 320), (384, 288), (288, 384))  # (width, height)
MIN_EXTENT, MAX_EXTENT, LARGE_EXTENT, MAX_LARGE = 8.0, 128.0, 64.0, 2
CLUSTER_P = 0.35  # chance that an object is placed next to an earlier one (more occlusion)
MIN_VISIBLE, DIFFICULT_VISIBLE, MAX_TRUNCATED, MIN_BOX_SIDE = 0.2, 0.35, 0.5, 3
Box = tuple[int, int, int, int]  # x1, y1, x2, y2: integer, continuous 0-based xyxy
_SHIFT = 4  # cv2 sub-pixel bits for polygon vertices
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class SynthProfile:
    """How hard the images are: canvas sizes, object extents and counts, clutter and texture.

    ``standard`` is the dataset the module docstring describes. ``easy``: small canvases (128x128,
    144x112, 112x144), objects of 16-64 px, 3-8 objects, at most one background distractor and
    no texture, so that models trained from scratch learn something in CPU minutes. ``demo``,
    the demo's: the same scenes on canvases twice as large (256x256, 288x224, 224x288) with
    objects of 16-80 px, so that a student at half resolution sees them at 8-40 px, where the
    similar pairs (pentagon/hexagon, circle/ellipse) are hard to tell apart: halving the input
    both costs accuracy and buys a real speed-up.
    """

    image_sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES  # (width, height)
    extent: tuple[float, float] = (MIN_EXTENT, MAX_EXTENT)  # log-uniform object extent, px
    objects: tuple[int, int] = (4, 13)  # objects per image, [lo, hi)
    clutter: tuple[int, int] = (4, 14)  # background distractors, [lo, hi)
    textures: tuple[int, int] = (1, 3)  # background textures, [lo, hi)


SYNTH_PROFILES: dict[str, SynthProfile] = {
    "standard": SynthProfile(),
    "easy": SynthProfile(((128, 128), (144, 112), (112, 144)), (16.0, 64.0), (3, 9), (0, 2), (0, 1)),
    "demo": SynthProfile(((256, 256), (288, 224), (224, 288)), (16.0, 80.0), (3, 9), (0, 2), (0, 1)),
}


def synth_profile(name: str) -> SynthProfile:
    """The profile called ``name``; an unknown name is a :class:`DetkdError` listing the known ones."""
    if name not in SYNTH_PROFILES:
        raise DetkdError(f"unknown synth profile {name!r} (known: {', '.join(SYNTH_PROFILES)})")
    return SYNTH_PROFILES[name]


@dataclass(frozen=True)
class SynthObject:
    """One annotated object: ``label`` in 1..K, integer ``box`` (x1, y1, x2, y2) continuous xyxy."""

    label: int
    box: Box
    truncated: float  # fraction of the whole shape outside the image, 2 decimals (as KITTI has it)
    visible: float  # fraction of the in-image pixels not covered by later paint

    @property
    def name(self) -> str:
        return SYNTH_CLASSES[self.label - 1]

    @property
    def difficult(self) -> bool:
        return self.visible < DIFFICULT_VISIBLE

    @property
    def occluded(self) -> int:
        """KITTI's occlusion level: 0 fully visible, 1 partly, 2 largely occluded."""
        return 0 if self.visible >= 0.95 else 1 if self.visible >= 0.5 else 2


@dataclass(frozen=True)
class SynthImage:
    """The annotations of one generated image."""

    index: int
    width: int
    height: int
    objects: tuple[SynthObject, ...]

    @property
    def stem(self) -> str:
        return image_stem(self.index)

    @property
    def split(self) -> str:
        return split_of(self.index)


@dataclass
class SynthSummary:
    """What :func:`generate_synth` wrote: the folder, the classes and the counts per split."""

    out_dir: str
    seed: int
    num_images: int
    classes: tuple[str, ...] = SYNTH_CLASSES
    images: dict[str, int] = field(default_factory=dict)
    objects: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> count
    difficult: dict[str, int] = field(default_factory=dict)
    profile: str = "standard"

    @property
    def roots(self) -> dict[str, str]:
        """The root folder of each layout, as the readers take it."""
        return {fmt: os.path.join(self.out_dir, fmt) for fmt in ("voc", "kitti", "coco")}


def image_stem(index: int) -> str:
    """The file stem of 0-based image ``index``: ``000001`` for image 0."""
    return f"{index + 1:06d}"


def split_of(index: int) -> str:
    """``test`` for every fifth image (0-based index 4, 9, ...), ``train`` otherwise."""
    return "test" if index % 5 == 4 else "train"


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator image ``index`` is drawn from: independent of every other image."""
    return np.random.default_rng([seed, index])


# --------------------------------------------------------------------------------------------
# Drawing


def draw_image(rng: np.random.Generator, profile: SynthProfile = SYNTH_PROFILES["standard"]
               ) -> tuple[np.ndarray, list[SynthObject]]:
    """One image ``[H, W, 3]`` uint8 RGB and its objects, all drawn from ``rng``."""
    width, height = profile.image_sizes[rng.integers(len(profile.image_sizes))]
    canvas = _background(rng, height, width, profile.textures)
    owner = np.full((height, width), -1, dtype=np.int16)  # index of the object seen per pixel
    _clutter(rng, canvas, owner, profile.clutter)
    placed = _place_objects(rng, canvas, owner, profile)
    _clutter(rng, canvas, owner, None)
    seen = np.bincount(owner[owner >= 0].ravel(), minlength=len(placed))
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 0.8))
    canvas += rng.normal(0.0, rng.uniform(1.5, 6.0), canvas.shape).astype(np.float32)
    objects = [
        SynthObject(label, box, round(truncated, 2), round(float(seen[j]) / inside, 4))
        for j, (label, box, truncated, inside) in enumerate(placed)
    ]
    return np.clip(canvas, 0, 255).astype(np.uint8), objects


def _background(rng: np.random.Generator, height: int, width: int, textures: tuple[int, int]) -> np.ndarray:
    """A gradient between two random colours plus ``textures`` ([lo, hi)) textures, float32 ``[H, W, 3]``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    img = c0.astype(np.float32) + ramp[..., None] * (c1 - c0).astype(np.float32)
    for kind in rng.choice(3, size=rng.integers(*textures), replace=False):
        if kind == 0:  # stripes
            b = rng.uniform(0, math.pi)
            phase = (xx * math.cos(b) + yy * math.sin(b)) / rng.uniform(6, 40) + rng.uniform(0, 1)
            wave = np.sin(2 * math.pi * phase)
            img += wave[..., None] * rng.uniform(-35, 35, 3).astype(np.float32)
        elif kind == 1:  # low-frequency colour blotches
            grid = rng.normal(0, rng.uniform(10, 30), (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3))
            img += cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        else:  # a grid of thin lines
            step = int(rng.integers(12, 48))
            lines = ((xx.astype(np.int32) % step) < 1) | ((yy.astype(np.int32) % step) < 1)
            img[lines] += rng.uniform(-50, 50, 3).astype(np.float32)
    return img


def _clutter(rng: np.random.Generator, canvas: np.ndarray, owner: np.ndarray, count: tuple[int, int] | None) -> None:
    """Paint distractors (never objects); their pixels hide whatever lies below (``owner = -1``).

    Before the objects (``count`` = [lo, hi), 4-13 in the standard profile): line segments, arcs,
    jagged blobs and dot clumps; over them (``count`` None): 0-3 thin line segments and arcs.
    """
    height, width = owner.shape
    foreground = count is None
    if foreground:
        kinds = rng.integers(0, 2, size=rng.integers(0, 4))
    else:
        kinds = rng.integers(0, 4, size=rng.integers(*count))
    mask = np.zeros((height, width), dtype=np.uint8)
    for kind in kinds:
        mask[:] = 0
        thickness = int(rng.integers(1, 3 if foreground else 4))
        _distractor_mask(rng, int(kind), mask, (rng.uniform(0, width), rng.uniform(0, height)), thickness)
        hit = mask.astype(bool)
        canvas[hit] = rng.uniform(0, 255, 3).astype(np.float32)
        owner[hit] = -1


def _distractor_mask(
    rng: np.random.Generator, kind: int, mask: np.ndarray, center: tuple[float, float], thickness: int
) -> None:
    """Draw one distractor into ``mask``: 0 segment, 1 arc, 2 jagged blob, 3 clump of dots."""
    cx, cy = center
    if kind == 0:
        end = (cx + rng.uniform(-120, 120), cy + rng.uniform(-120, 120))
        cv2.line(mask, _pt(center), _pt(end), 1, thickness, cv2.LINE_8, _SHIFT)
    elif kind == 1:
        axes = _pt((rng.uniform(6, 60), rng.uniform(6, 60)))
        start, span, tilt = rng.uniform(0, 360), rng.uniform(60, 240), rng.uniform(0, 180)
        cv2.ellipse(mask, _pt(center), axes, tilt, start, start + span, 1, thickness, cv2.LINE_8, _SHIFT)
    elif kind == 2:  # jagged: 7-13 vertices at random angles and radii 30-100 % of the size
        n = int(rng.integers(7, 14))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.3, 1.0, n) * rng.uniform(3, 30)
        poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(poly * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    else:
        for _ in range(int(rng.integers(4, 16))):
            dot = (cx + rng.normal(0, 12), cy + rng.normal(0, 12))
            cv2.circle(mask, _pt(dot), int(rng.uniform(0.8, 2.5) * _ONE), 1, -1, cv2.LINE_8, _SHIFT)


def _pt(xy: tuple[float, float]) -> tuple[int, int]:
    """A point in cv2's fixed-point sub-pixel form (``_SHIFT`` fraction bits)."""
    return int(round(xy[0] * _ONE)), int(round(xy[1] * _ONE))


class _Placed(NamedTuple):
    label: int
    box: Box
    truncated: float
    inside: int  # in-image pixels of the whole shape


def _place_objects(rng: np.random.Generator, canvas: np.ndarray, owner: np.ndarray,
                   profile: SynthProfile) -> list[_Placed]:
    """Paint the profile's number of objects (4-12 standard), keeping each earlier one >= 20 % visible."""
    height, width = owner.shape
    target = int(rng.integers(*profile.objects))
    low, high = (math.log(e) for e in profile.extent)
    placed: list[_Placed] = []
    visible: list[int] = []
    large = 0
    for _ in range(6 * target):
        if len(placed) == target:
            break
        label = int(rng.integers(1, len(SYNTH_CLASSES) + 1))
        extent = float(np.exp(rng.uniform(low, high)))
        if extent > LARGE_EXTENT and large >= MAX_LARGE:
            continue
        near = placed[rng.integers(len(placed))].box if placed and rng.uniform() < CLUSTER_P else None
        candidate = _candidate(rng, label, extent, width, height, near)
        if candidate is None:
            continue
        box, mask, truncated = candidate
        x1, y1, x2, y2 = box
        under = owner[y1:y2, x1:x2][mask]
        covered = np.bincount(under[under >= 0], minlength=len(placed))
        if any(v - c < MIN_VISIBLE * p.inside for v, c, p in zip(visible, covered, placed)):
            continue
        visible = [v - int(c) for v, c in zip(visible, covered)]
        colour = _object_colour(rng, label, canvas[y1:y2, x1:x2][mask])
        _paint(rng, canvas, box, mask, colour)
        owner[y1:y2, x1:x2][mask] = len(placed)
        placed.append(_Placed(label, box, truncated, int(mask.sum())))
        visible.append(placed[-1].inside)
        large += extent > LARGE_EXTENT
    return placed


def _candidate(
    rng: np.random.Generator, label: int, extent: float, width: int, height: int, near: Box | None
) -> tuple[Box, np.ndarray, float] | None:
    """A random placement: ``(box, mask inside the box, truncated)``, or None if unusable.

    The centre is uniform over the image grown by a quarter of the extent on every side, or,
    given the box of an earlier object (``near``), at 30-90 % of the sum of both radii from its
    centre, so that the two overlap or nearly touch.
    """
    if near is None:
        margin = extent / 4
        cx, cy = rng.uniform(-margin, width + margin), rng.uniform(-margin, height + margin)
    else:
        reach = (max(near[2] - near[0], near[3] - near[1]) + extent) / 2 * rng.uniform(0.3, 0.9)
        angle = rng.uniform(0, 2 * math.pi)
        cx = (near[0] + near[2]) / 2 + reach * math.cos(angle)
        cy = (near[1] + near[3]) / 2 + reach * math.sin(angle)
    x0, y0, full = _rasterize(_shape_polygon(rng, label, extent, cx, cy))
    fh, fw = full.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + fw, width), min(y0 + fh, height)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    part = full[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    inside, total = int(part.sum()), int(full.sum())
    if total == 0 or inside < (1 - MAX_TRUNCATED) * total:
        return None
    rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
    box = (ix0 + int(cols[0]), iy0 + int(rows[0]), ix0 + int(cols[-1]) + 1, iy0 + int(rows[-1]) + 1)
    if min(box[2] - box[0], box[3] - box[1]) < MIN_BOX_SIDE:
        return None
    mask = part[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return box, mask, 1.0 - inside / total


def _shape_polygon(rng: np.random.Generator, label: int, extent: float, cx: float, cy: float) -> np.ndarray:
    """The ``[V, 2]`` float polygon of a class's shape of the given extent, centred at (cx, cy)."""
    name, r = SYNTH_CLASSES[label - 1], extent / 2
    if name in ("circle", "ellipse"):
        minor = max(r * (1.0 if name == "circle" else rng.uniform(0.45, 0.72)), 2.0)
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        pts, rot = np.stack([r * np.cos(t), minor * np.sin(t)], 1), rng.uniform(0, math.pi)
    elif name in ("square", "rectangle"):
        h = max(r * (1.0 if name == "square" else rng.uniform(0.40, 0.68)), 2.0)
        pts = np.array([[-r, -h], [r, -h], [r, h], [-r, h]])
        rot = math.radians(rng.uniform(-25, 25) + 90 * rng.integers(2))
    elif name.startswith("cross_"):
        a, b = r, max(r * 0.34, 1.5)
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                        [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]])  # fmt: skip
        rot = math.radians(rng.uniform(-25, 25))
    else:  # regular polygons
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[name]
        t = np.arange(n) * 2 * math.pi / n
        pts, rot = np.stack([r * np.cos(t), r * np.sin(t)], 1), rng.uniform(0, 2 * math.pi)
    c, s = math.cos(rot), math.sin(rot)
    return pts @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


def _rasterize(poly: np.ndarray) -> tuple[int, int, np.ndarray]:
    """``(x0, y0, mask)``: the filled polygon as a bool mask whose top-left pixel is (x0, y0)."""
    x0, y0 = (np.floor(poly.min(0)) - 1).astype(int)
    x1, y1 = (np.ceil(poly.max(0)) + 2).astype(int)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    pts = np.round((poly - np.array([x0, y0])) * _ONE).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, _SHIFT)
    return int(x0), int(y0), mask.astype(bool)


def _object_colour(rng: np.random.Generator, label: int, under: np.ndarray) -> np.ndarray:
    """An RGB colour for the class (crosses: red or orange hue), contrasting with ``under``."""
    name = SYNTH_CLASSES[label - 1]
    below = under.mean(0) if len(under) else np.full(3, 128.0)
    for _ in range(8):
        if name.startswith("cross_"):
            hue = (rng.uniform(-10, 8) if name == "cross_red" else rng.uniform(20, 32)) % 360 / 360
            sat, val = rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0)
        else:
            hue, sat, val = rng.uniform(0, 1), rng.uniform(0.2, 1.0), rng.uniform(0.25, 1.0)
        rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255
        if np.abs(rgb - below).sum() > 90:
            break
    return rgb.astype(np.float32)


def _paint(
    rng: np.random.Generator, canvas: np.ndarray, box: Box, mask: np.ndarray, colour: np.ndarray
) -> None:
    """Fill the mask with the colour under a random linear brightness ramp (up to +-25 %)."""
    x1, y1, x2, y2 = box
    strength, angle = rng.uniform(0, 0.25), rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0 : y2 - y1, 0 : x2 - x1].astype(np.float32)
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = 2 * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0) - 1
    shade = 1 + strength * ramp[mask]
    canvas[y1:y2, x1:x2][mask] = np.clip(colour[None, :] * shade[:, None], 0, 255)


# --------------------------------------------------------------------------------------------
# Annotation files


def voc_xml(image: SynthImage) -> str:
    """The VOC annotation of an image (1-based inclusive ``bndbox``)."""
    lines = [
        "<annotation>",
        "\t<folder>voc</folder>",
        f"\t<filename>{image.stem}.png</filename>",
        "\t<source>\n\t\t<database>detkd synth</database>\n\t</source>",
        f"\t<size>\n\t\t<width>{image.width}</width>\n\t\t<height>{image.height}</height>"
        "\n\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in image.objects:
        x1, y1, x2, y2 = obj.box
        lines += [
            "\t<object>",
            f"\t\t<name>{obj.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated > 0)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            f"\t\t<bndbox>\n\t\t\t<xmin>{x1 + 1}</xmin>\n\t\t\t<ymin>{y1 + 1}</ymin>"
            f"\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>",
            "\t</object>",
        ]
    return "\n".join(lines + ["</annotation>"]) + "\n"


def kitti_txt(image: SynthImage) -> str:
    """The KITTI label file of an image: 15 fields per object, 2D only (3D fields unset)."""
    return "".join(
        f"{obj.name} {obj.truncated:.2f} {obj.occluded} -10 "
        f"{obj.box[0]:.2f} {obj.box[1]:.2f} {obj.box[2]:.2f} {obj.box[3]:.2f} "
        "-1 -1 -1 -1000 -1000 -1000 -10\n"
        for obj in image.objects
    )


def coco_json(images: Sequence[SynthImage]) -> str:
    """The COCO instances file of a split (compact JSON, one fixed key order)."""
    annotations = []
    for image in images:
        for obj in image.objects:
            x1, y1, x2, y2 = obj.box
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(image.stem), "category_id": obj.label,
                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0, "segmentation": [],
            })  # fmt: skip
    data = {
        "info": {"description": "detkd embedded synthetic dataset", "version": str(SYNTH_VERSION)},
        "licenses": [{"id": 1, "name": "CC0-1.0", "url": ""}],
        "images": [
            {"id": int(im.stem), "file_name": f"{im.stem}.png", "width": im.width, "height": im.height}
            for im in images
        ],
        "annotations": annotations,
        "categories": [
            {"id": k, "name": name, "supercategory": "shape"} for k, name in enumerate(SYNTH_CLASSES, 1)
        ],
    }
    return json.dumps(data, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------------------------
# Generation


def render_image(out_dir: str, seed: int, index: int, profile: str = "standard") -> SynthImage:
    """Draw image ``index``, write its PNG to ``OUT/voc/JPEGImages`` and return its objects."""
    pixels, objects = draw_image(image_rng(seed, index), synth_profile(profile))
    path = os.path.join(out_dir, "voc", "JPEGImages", f"{image_stem(index)}.png")
    if not cv2.imwrite(path, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return SynthImage(index, pixels.shape[1], pixels.shape[0], tuple(objects))


def _render_star(args: tuple[str, int, int, str]) -> SynthImage:
    return render_image(*args)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _render_all(out_dir: str, num_images: int, seed: int, workers: int, profile: str) -> Iterator[SynthImage]:
    """Every image in index order, drawn in ``workers`` processes (in this one for small sets)."""
    jobs = [(out_dir, seed, i, profile) for i in range(num_images)]
    if workers <= 1 or num_images < 100:
        yield from map(_render_star, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(_render_star, jobs, chunksize=16)


def _link(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst``, or copy it where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _prepare(out_dir: str) -> None:
    """Empty this generator's own folders under ``out_dir`` (and refuse to touch foreign data)."""
    meta = os.path.join(out_dir, "synth.json")
    ours = _read_meta(meta) is not None
    for sub in ("voc", "kitti", "coco"):
        path = os.path.join(out_dir, sub)
        if os.path.lexists(path) and not ours:
            raise DetkdError(f"{path} exists and was not written by detkd data synth: choose another folder")
    for name in ("synth.json", "README.txt"):
        if os.path.lexists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    for sub in ("voc", "kitti", "coco"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    for sub in ("voc/JPEGImages", "voc/Annotations", "voc/ImageSets/Main", "kitti/image_2", "kitti/label_2",
                "kitti/ImageSets", "coco/annotations", *(f"coco/{s}" for s in SPLITS)):  # fmt: skip
        os.makedirs(os.path.join(out_dir, sub))
    _write(meta, json.dumps({**_params(0, 0, "standard"), "complete": False}) + "\n")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _store(out_dir: str, image: SynthImage) -> None:
    """Write an image's VOC and KITTI annotations and link its PNG into KITTI and COCO."""
    stem = image.stem
    png = os.path.join(out_dir, "voc", "JPEGImages", f"{stem}.png")
    _link(png, os.path.join(out_dir, "kitti", "image_2", f"{stem}.png"))
    _link(png, os.path.join(out_dir, "coco", image.split, f"{stem}.png"))
    _write(os.path.join(out_dir, "voc", "Annotations", f"{stem}.xml"), voc_xml(image))
    _write(os.path.join(out_dir, "kitti", "label_2", f"{stem}.txt"), kitti_txt(image))


def _write_splits(out_dir: str, images: Sequence[SynthImage]) -> None:
    """The split lists of VOC and KITTI, and COCO's instances file per split."""
    for split in SPLITS:
        members = [im for im in images if im.split == split]
        stems = "".join(f"{im.stem}\n" for im in members)
        _write(os.path.join(out_dir, "voc", "ImageSets", "Main", f"{split}.txt"), stems)
        _write(os.path.join(out_dir, "kitti", "ImageSets", f"{split}.txt"), stems)
        _write(os.path.join(out_dir, "coco", "annotations", f"instances_{split}.json"), coco_json(members))


def _summarize(out_dir: str, seed: int, images: Sequence[SynthImage], profile: str) -> SynthSummary:
    summary = SynthSummary(out_dir=out_dir, seed=seed, num_images=len(images), profile=profile)
    for split in SPLITS:
        members = [im for im in images if im.split == split]
        objects = [obj for im in members for obj in im.objects]
        summary.images[split] = len(members)
        summary.objects[split] = {name: sum(o.name == name for o in objects) for name in SYNTH_CLASSES}
        summary.difficult[split] = sum(o.difficult for o in objects)
    return summary


def _params(num_images: int, seed: int, profile: str) -> dict[str, object]:
    """What determines the generated data; :func:`ensure_synth` regenerates when it changes."""
    return {"generator": "detkd.data.synth", "version": SYNTH_VERSION, "seed": seed, "images": num_images,
            "profile": profile, "classes": list(SYNTH_CLASSES)}  # fmt: skip


def _read_meta(path: str) -> dict[str, object] | None:
    """The parsed ``synth.json``, or None when it is missing, unreadable or not ours."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == "detkd.data.synth" else None


def _write_meta(summary: SynthSummary) -> None:
    """``synth.json`` (written last, marked complete) and ``README.txt``."""
    meta = {
        **_params(summary.num_images, summary.seed, summary.profile),
        "image_sizes": [list(size) for size in synth_profile(summary.profile).image_sizes],
        "splits": summary.images,
        "objects": summary.objects,
        "difficult": summary.difficult,
        "complete": True,
    }
    head = (
        f"detkd synth v{SYNTH_VERSION}: {summary.num_images} images, seed {summary.seed}, profile "
        f"{summary.profile}, written by\n`detkd data synth OUT_DIR --images {summary.num_images} "
        f"--seed {summary.seed} --profile {summary.profile}`"
        " (detkd.data.synth).\n\n"
    )
    _write(os.path.join(summary.out_dir, "README.txt"), head + (__doc__ or "").strip() + "\n")
    _write(os.path.join(summary.out_dir, "synth.json"), json.dumps(meta, indent=2) + "\n")


def generate_synth(
    out_dir: str, num_images: int = 1000, seed: int = 0, workers: int = 1, progress: bool | None = None,
    profile: str = "standard",
) -> SynthSummary:
    """Write the embedded dataset under ``out_dir`` in VOC, KITTI and COCO layouts.

    Args:
        out_dir: the output folder (created if missing). Its ``voc``, ``kitti`` and ``coco``
            folders are replaced when an earlier run of this generator wrote them; any other
            existing ``voc``/``kitti``/``coco`` folder makes it a :class:`DetkdError`.
        num_images: the number of images (20 % of them go to ``test``).
        seed: the random seed; the same seed writes byte-identical files.
        workers: processes drawing images (a single process below 100 images).
        progress: show a tqdm bar; None (default) shows it on a terminal only.
        profile: ``standard`` or ``easy`` (:data:`SYNTH_PROFILES`).
    """
    if num_images < 1:
        raise DetkdError(f"the synthetic dataset needs at least one image, got {num_images}")
    if seed < 0:
        raise DetkdError(f"the seed of the synthetic dataset must be 0 or more, got {seed}")
    synth_profile(profile)
    out = os.path.abspath(os.path.expanduser(out_dir))
    os.makedirs(out, exist_ok=True)
    _prepare(out)
    images = []
    disable = None if progress is None else not progress  # None: tqdm shows it on a terminal only
    with tqdm(total=num_images, desc="synth", unit="img", disable=disable) as bar:
        for image in _render_all(out, num_images, seed, workers, profile):
            _store(out, image)
            images.append(image)
            bar.update()
    _write_splits(out, images)
    summary = _summarize(out, seed, images, profile)
    _write_meta(summary)
    return summary


def ensure_synth(out_dir: str, num_images: int = 1000, seed: int = 0, profile: str = "standard") -> str:
    """The absolute ``out_dir``, generating the dataset there first unless a complete one with
    the same parameters (``synth.json``) is already in place."""
    out = os.path.abspath(os.path.expanduser(out_dir))
    with _folder_lock(out):  # torchrun ranks (or two runs) sharing a cache: one writes, the others wait
        meta = _read_meta(os.path.join(out, "synth.json"))
        current = meta is not None and meta.get("complete") is True and all(
            meta.get(k) == v for k, v in _params(num_images, seed, profile).items()
        )
        if not current or not all(os.path.isdir(os.path.join(out, sub)) for sub in ("voc", "kitti", "coco")):
            generate_synth(out, num_images, seed, profile=profile)
    return out


@contextlib.contextmanager
def _folder_lock(out: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``OUT.lock`` (no lock where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
