"""The object-region mask of Wang et al. (CVPR 2019) on torchvision's own anchors."""

from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from detkd.distill.masks import object_masks


def anchors_and_maps(sizes: tuple[tuple[int, ...], ...], grids: list[tuple[int, int]], image: int = 64):
    """torchvision's anchors for a batch of two ``image`` x ``image`` images, and empty RPN maps."""
    ratios = ((0.5, 1.0, 2.0),) * len(sizes)
    generator = AnchorGenerator(sizes, ratios)
    features = [torch.zeros(2, 8, h, w) for h, w in grids]
    images = ImageList(torch.zeros(2, 3, image, image), [(image, image)] * 2)
    anchors = generator(images, features)
    objectness = [torch.zeros(2, 3 * len(s), h, w) for s, (h, w) in zip(sizes, grids)]
    return anchors[0], objectness


def test_the_mask_marks_the_cells_of_the_best_anchors_and_their_neighbours() -> None:
    anchors, objectness = anchors_and_maps(((16,), (32,)), [(16, 16), (8, 8)])
    box = torch.tensor([[24.0, 24.0, 40.0, 40.0]])  # a 16 px square centred at (32, 32)
    masks = object_masks(anchors, [box, torch.zeros(0, 4)], objectness, psi=0.5)
    assert [tuple(m.shape) for m in masks] == [(2, 1, 16, 16), (2, 1, 8, 8)]
    assert not masks[0][1].any() and not masks[1][1].any()  # no box in image 1: no cell
    stride4 = masks[0][0, 0]
    assert stride4[8, 8]  # the anchor centred on the box (cell x 8 * 4 = 32) matches it exactly
    assert not stride4[0, 0] and not stride4[15, 15]  # far away
    assert stride4.sum() < 40  # a neighbourhood, not the map
    # brute force over every anchor of the level: IoU > 0.5 * the best
    level = anchors[: 16 * 16 * 3]
    iou = box_iou(box, level)[0]
    expected = (iou > 0.5 * iou.max()).view(16, 16, 3).any(dim=2)
    assert torch.equal(stride4, expected)


def test_psi_widens_or_narrows_the_region() -> None:
    anchors, objectness = anchors_and_maps(((16,),), [(16, 16)])
    box = [torch.tensor([[10.0, 10.0, 30.0, 34.0]]), torch.tensor([[40.0, 8.0, 60.0, 20.0]])]
    wide, narrow = object_masks(anchors, box, objectness, psi=0.2)[0], object_masks(anchors, box, objectness, psi=0.9)[0]
    assert narrow.sum() >= 2 and wide.sum() > narrow.sum()  # at least the best cell of each image
    assert (narrow & ~wide).sum() == 0
