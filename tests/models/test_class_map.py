"""A detector of COCO's classes seen through the data's: the reduced softmax is the 91-way one
with the unselected classes folded into background; VOC names resolve; unknown names error."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from detkd.data.voc import VOC_CLASSES
from detkd.errors import DetkdError
from detkd.models.class_map import ReducedPredictor, match_classes

COCO = list(torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def test_every_voc_class_resolves_to_a_coco_category() -> None:
    keep = match_classes(VOC_CLASSES, COCO)
    names = dict(zip(VOC_CLASSES, (COCO[i] for i in keep)))
    assert names["aeroplane"] == "airplane" and names["tvmonitor"] == "tv" and names["diningtable"] == "dining table"
    assert names["person"] == "person" and len(set(keep)) == 20


def test_an_unknown_name_is_an_error_listing_the_closest_and_a_class_map_fixes_it() -> None:
    with pytest.raises(DetkdError, match=r"'Cyclist' has no teacher class \(closest: .*bicycle"):
        match_classes(["Car", "Cyclist"], [c.capitalize() if c == "car" else c for c in COCO])
    assert [COCO[i] for i in match_classes(["Car", "Cyclist"], COCO, {"Car": "car", "Cyclist": "bicycle"})] == [
        "car", "bicycle"]


def test_reduced_probabilities_sum_to_one_and_equal_the_folded_91_way_softmax() -> None:
    torch.manual_seed(0)
    predictor = FastRCNNPredictor(16, len(COCO))
    keep = match_classes(["dog", "cat", "person"], COCO)
    reduced = ReducedPredictor(predictor, keep, len(COCO))
    x = torch.randn(5, 16)
    scores, deltas = reduced(x)
    full_scores, full_deltas = predictor(x)
    p, full = scores.softmax(1), full_scores.softmax(1)
    assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-6)
    assert torch.allclose(p[:, 1:], full[:, keep], atol=1e-6)  # each selected class keeps its probability
    hand = 1.0 - full[:, keep].sum(1)  # background: everything not selected
    assert torch.allclose(p[:, 0], hand, atol=1e-6)
    boxes = full_deltas.reshape(5, len(COCO), 4)
    assert deltas.shape == (5, 16) and torch.equal(deltas.reshape(5, 4, 4)[:, 1:], boxes[:, keep])


@pytest.mark.parametrize(("class_map", "message"), [
    ({"car": "car", "nosuch": "bicycle"}, r"^teacher\.class_map: \{nosuch: bicycle\}: 'nosuch' is not a class of the data "
                                          r"\(no close name; the data's classes: car, bicycle\)$"),
    ({"car": "car", "bicycle": "bicycel"}, r"^teacher\.class_map: \{bicycle: bicycel\}: the teacher has no class 'bicycel' "
                                           r"\(closest: bicycle.*; the teacher's classes: person, bicycle, car, .*, \.\.\.\)$"),
])
def test_a_class_map_entry_naming_no_class_is_refused_with_the_known_names(class_map: dict, message: str) -> None:
    """Both data classes match COCO by name: an entry naming no class used to be ignored without a word."""
    with pytest.raises(DetkdError, match=message):
        match_classes(["car", "bicycle"], COCO, class_map)
    assert [COCO[i] for i in match_classes(["car", "bicycle"], COCO, {"car": "car", "bicycle": "bicycle"})] == [
        "car", "bicycle"]
