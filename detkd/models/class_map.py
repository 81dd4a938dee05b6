"""A detector trained on more classes (COCO's 91 labels) used, as it is, on the data's K classes.

The data's classes are matched to the teacher's by name (``teacher.class_map`` first, then the
name itself, then the standard VOC -> COCO aliases). The box predictor is wrapped by
:class:`ReducedPredictor`: its K + 1 logits are the selected classes' logits and a background
whose probability is the background's plus every unselected class's (a logsumexp over those
logits), so that the softmax over the reduced classes is exactly the 91-way softmax with the
unselected classes folded into background; the box deltas are the selected classes'.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from detkd.config import ModelSection
from detkd.errors import DetkdError
from detkd.models.detector import build_model
from detkd.models.weights import DETECTOR_BUILDERS, resolve_weights

log = logging.getLogger("detkd")

VOC_TO_COCO = {"aeroplane": "airplane", "motorbike": "motorcycle", "sofa": "couch", "tvmonitor": "tv",
               "diningtable": "dining table", "pottedplant": "potted plant"}
IGNORED_NAMES = ("__background__", "N/A")  # torchvision's COCO category list: background and unused ids


def match_classes(data_classes: Sequence[str], teacher_classes: Sequence[str],
                  class_map: Mapping[str, str] | None = None) -> list[int]:
    """For each data class, the index of its teacher class in ``teacher_classes`` (index 0: the
    teacher's background), matched by ``class_map``, by name, then by :data:`VOC_TO_COCO`.

    Raises:
        DetkdError: a data class with no teacher class, listing the closest teacher names; a
            ``class_map`` entry naming no class (:func:`check_class_map`).
    """
    check_class_map(class_map, data_classes, teacher_classes)
    index = {name: i for i, name in enumerate(teacher_classes) if name not in IGNORED_NAMES}
    class_map = dict(class_map or {})
    keep = []
    for name in data_classes:
        wanted = class_map.get(name, name)
        found = index.get(wanted, index.get(VOC_TO_COCO.get(wanted, wanted)))
        if found is None:
            raise DetkdError(f"teacher.class_map: data class {name!r} has no teacher class ({closest(wanted, index)}); "
                             f"map it with teacher.class_map: {{{name}: <teacher class>}} or fine-tune the teacher")
        keep.append(found)
    if len(set(keep)) != len(keep):
        raise DetkdError(f"teacher.class_map: two data classes map to one teacher class ({list(data_classes)} -> "
                         f"{[teacher_classes[i] for i in keep]})")
    return keep


def check_class_map(class_map: Mapping[str, str] | None, data_classes: Sequence[str],
                    teacher_classes: Sequence[str]) -> None:
    """Every ``teacher.class_map`` entry maps a class of the data to a class of the teacher (or
    its VOC name, :data:`VOC_TO_COCO`): an entry naming no class would be ignored without a word.

    Raises:
        DetkdError: the first entry naming no class, with the known names.
    """
    known = [n for n in teacher_classes if n not in IGNORED_NAMES]
    for key, value in (class_map or {}).items():
        entry = f"teacher.class_map: {{{key}: {value}}}"
        if key not in data_classes:
            raise DetkdError(f"{entry}: {key!r} is not a class of the data ({closest(key, data_classes)}; the data's "
                             f"classes: {', '.join(data_classes)})")
        if value not in known and VOC_TO_COCO.get(value) not in known:
            more = ", ..." if len(known) > 12 else ""
            raise DetkdError(f"{entry}: the teacher has no class {value!r} ({closest(value, known)}; the teacher's "
                             f"classes: {', '.join(known[:12])}{more})")


def closest(wanted: str, names: Iterable[str]) -> str:
    """``closest: a, b`` (up to three names like ``wanted``, whatever their case), or ``no close name``."""
    lower = {n.lower(): n for n in names}
    close = [lower[n] for n in difflib.get_close_matches(wanted.lower(), list(lower), n=3, cutoff=0.5)]
    return f"closest: {', '.join(close)}" if close else "no close name"


class ReducedPredictor(nn.Module):
    """The teacher's box predictor seen through the data's classes.

    ``forward(x [N, C])`` -> ``(scores [N, K + 1], deltas [N, 4 (K + 1)])``: column 0 is the
    logsumexp of the background logit and every unselected class's, columns 1..K the selected
    classes' logits (in ``keep``'s order); the deltas of the background and the selected classes.
    """

    def __init__(self, predictor: nn.Module, keep: Sequence[int], num_teacher_classes: int) -> None:
        super().__init__()
        self.predictor = predictor
        selected = set(keep)
        self.register_buffer("keep", torch.tensor(list(keep), dtype=torch.long), persistent=False)
        folded = [0] + [i for i in range(1, num_teacher_classes) if i not in selected]
        self.register_buffer("folded", torch.tensor(folded, dtype=torch.long), persistent=False)
        self.num_teacher_classes = num_teacher_classes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, deltas = self.predictor(x)
        background = torch.logsumexp(scores[:, self.folded], dim=1, keepdim=True)
        reduced = torch.cat([background, scores[:, self.keep]], dim=1)
        boxes = deltas.reshape(deltas.shape[0], self.num_teacher_classes, 4)
        kept = torch.cat([boxes[:, :1], boxes[:, self.keep]], dim=1)
        return reduced, kept.reshape(deltas.shape[0], -1)


def reduce_classes(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """``model`` (a torchvision Faster R-CNN) predicting only the classes ``keep``, in place."""
    predictor = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = ReducedPredictor(predictor, keep, predictor.cls_score.out_features)
    return model


def pretrained_for_classes(model_cfg: ModelSection, data_classes: Sequence[str],
                           class_map: Mapping[str, str] | None = None) -> nn.Module:
    """The pretrained detector of ``model_cfg.weights`` (e.g. COCO's 91 labels) built whole and
    reduced to ``data_classes`` by name (:func:`match_classes`), to be used as it is."""
    builder = model_cfg.torchvision or DETECTOR_BUILDERS.get(model_cfg.backbone)
    categories = list(resolve_weights(model_cfg.weights, "model.weights", builder).meta["categories"])
    keep = match_classes(data_classes, categories, class_map)
    log.info("%s used as it is, classes %s", model_cfg.weights,
             ", ".join(f"{d}->{categories[i]}" for d, i in zip(data_classes, keep)))
    return reduce_classes(build_model(model_cfg, len(categories)), keep)
