"""Pretrained weights: torchvision's weights by name (as torchvision gets them) and checkpoint files.

A torchvision weights name (``ResNet50_Weights.IMAGENET1K_V1``,
``FasterRCNN_ResNet50_FPN_Weights.DEFAULT``, or just ``DEFAULT`` / ``IMAGENET1K_V1`` for the
configured backbone) is resolved with :func:`torchvision.models.get_weight` and read from where
torchvision itself caches it, ``torch.hub.get_dir()/checkpoints/<file name of its URL>``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). A file not
there yet is downloaded on first use by torchvision's own mechanism
(``weights.get_state_dict(progress=True, check_hash=True)``: a progress bar, the SHA-256 prefix
of the file name checked, nothing left behind on failure), unless detkd runs offline
(``DETKD_OFFLINE=1``, or ``detkd --offline``): then the error names the file, the folder and the
URL to fetch it from.

Checkpoint files (``model.checkpoint``, a file in torch's cache) are read with
:func:`detkd.utils.checkpoint.read_checkpoint`, the one reader of weights files. Every load is
checked key by key: missing keys, unexpected keys and shape mismatches are a
:class:`~detkd.errors.DetkdError` naming the file and the first mismatches.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from detkd.errors import DetkdError
from detkd.utils.checkpoint import StateDict, read_checkpoint

log = logging.getLogger("detkd")

# torchvision's detector builder for each backbone, for the short names ("DEFAULT", "COCO_V1")
DETECTOR_BUILDERS = {"resnet50": "fasterrcnn_resnet50_fpn", "mobilenet_v3_large": "fasterrcnn_mobilenet_v3_large_fpn"}
OFFLINE_ENV = "DETKD_OFFLINE"  # set (1, true, yes): weights missing from torch's cache are an error, never downloaded


def resolve_weights(name: str, key: str, model_name: str | None) -> WeightsEnum:
    """A torchvision weights enum member by full name (``Enum.MEMBER``) or, for ``model_name``,
    by member name alone (``DEFAULT``). ``key`` (``model.weights``) names the config key in errors."""
    try:
        if "." in name:
            return torchvision.models.get_weight(name)
        if model_name is None:
            raise ValueError("give the full name, e.g. FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
        return torchvision.models.get_model_weights(model_name)[name]
    except (ValueError, KeyError) as e:
        detail = str(e).strip("'\"") if isinstance(e, ValueError) else f"no member {name!r}"
        raise DetkdError(f"{key}: unknown torchvision weights {name!r} ({detail})") from None


def backbone_weights(name: str, backbone: str) -> WeightsEnum:
    """``model.weights_backbone``: checked to be weights of the configured backbone's classifier."""
    weights = resolve_weights(name, "model.weights_backbone", backbone)
    expected = torchvision.models.get_model_weights(backbone)
    if not isinstance(weights, expected):
        raise DetkdError(
            f"model.weights_backbone: {name} are not weights of {backbone} (expected {expected.__name__}.<NAME>, "
            f"e.g. {expected.__name__}.DEFAULT)"
        )
    return weights


def detector_weights(name: str, backbone: str) -> WeightsEnum:
    """``model.weights``: torchvision Faster R-CNN weights (checked against the model when loaded)."""
    return resolve_weights(name, "model.weights", DETECTOR_BUILDERS.get(backbone))


def hub_checkpoint_path(weights: WeightsEnum) -> str:
    """Where torchvision caches ``weights``: ``torch.hub.get_dir()/checkpoints/<file name of the URL>``."""
    file_name = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", file_name)


def load_cached_weights(weights: WeightsEnum, key: str) -> tuple[StateDict, str]:
    """The state dict of ``weights`` from torch's cache (downloaded first when missing and
    online), and its path."""
    path = cached_weights_path(weights, key)
    return read_checkpoint(path).model_state, path


def offline() -> bool:
    """Whether detkd may not download weights: ``DETKD_OFFLINE`` set to anything but 0/false/no/empty."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cached_weights_path(weights: WeightsEnum, key: str) -> str:
    """Where torch's cache holds ``weights``, downloaded there first when missing (online); a
    missing file offline, or a failed download, is an error saying where to put it."""
    path = hub_checkpoint_path(weights)
    if not os.path.isfile(path):
        download_weights(weights, key, path)
    return path


def download_weights(weights: WeightsEnum, key: str, path: str) -> None:
    """``weights`` into torch's cache as torchvision downloads them (progress bar, hash check)."""
    name = f"{type(weights).__name__}.{weights.name}"
    put_it = (f"fetch {weights.url} and put it in {os.path.dirname(path)}, or set TORCH_HOME to the folder whose "
              "hub/checkpoints holds it")
    if offline():
        raise DetkdError(f"{key}: {name}: weights file not found: {path} (offline: {OFFLINE_ENV}=1 or --offline, "
                         f"nothing is downloaded; on a machine with network {put_it})")
    log.info("%s: %s: not in torch's cache, downloading %s to %s (once; %s=1 forbids downloads)", key, name,
             weights.url, path, OFFLINE_ENV)
    try:
        weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; a wrong hash a RuntimeError
        raise DetkdError(f"{key}: {name}: download of {weights.url} failed: {e} ({put_it})") from None
    if not os.path.isfile(path):
        raise DetkdError(f"{key}: {name}: downloaded, but not found at {path} ({put_it})")


def state_mismatches(model: nn.Module, state: StateDict, allow_missing: tuple[str, ...] = ()) -> list[str]:
    """Problems loading ``state`` into ``model``: missing, unexpected and wrong-shape keys, in
    order. BatchNorm's ``num_batches_tracked`` counters are never a problem (frozen BN has none)."""
    own = model.state_dict()

    def counted(k: str) -> bool:
        return not k.endswith("num_batches_tracked")

    problems = [f"missing {k}" for k in own if k not in state and counted(k) and not k.startswith(allow_missing)]
    problems += [f"unexpected {k}" for k in state if k not in own and counted(k)]
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            problems.append(f"{k}: shape {list(v.shape)} in the file, {list(own[k].shape)} in the model")
    return problems


def load_matching_weights(model: nn.Module, path: str) -> list[str]:
    """``model.checkpoint_matching``: the tensors of the checkpoint at ``path`` whose name and shape
    fit ``model`` (inheritance across architectures, as FGD's ``init_student`` and MMRazor's prefix
    init do); -> the top-level modules they fill, e.g. ``rpn.head``. None fitting is an error."""
    state = read_checkpoint(path).weights
    own = model.state_dict()
    taken = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    layers = [k for k, v in taken.items() if v.dim() >= 2]  # weights, not the odd bias of the same length
    if not layers:
        raise DetkdError(f"{path}: model.checkpoint_matching: no layer of the checkpoint fits this model "
                         "(names and shapes differ everywhere)")
    model.load_state_dict({**own, **taken}, strict=True)
    modules = sorted({".".join(k.split(".")[:2]) for k in layers})
    log.info("%s: %d of the model's %d tensors taken from the checkpoint (%s)", path, len(taken), len(own),
             ", ".join(modules))
    return modules


def load_state_checked(
    model: nn.Module, state: StateDict, source: str, what: str = "model", allow_missing: tuple[str, ...] = ()
) -> None:
    """Load ``state`` into ``model``; any mismatch is a :class:`DetkdError` naming ``source`` and
    the first three mismatches. Keys under ``allow_missing`` prefixes keep the model's values."""
    problems = state_mismatches(model, state, allow_missing)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DetkdError(
            f"{source}: the {what} weights do not fit the configured model: {'; '.join(problems[:3])}{more} "
            "(check model.backbone, model.norm, model.fpn_channels, model.returned_layers, the anchors, "
            "model.roi.box_head_width and the number of classes)"
        )
    own = model.state_dict()
    full = {k: state.get(k, own[k]) for k in own}  # missing counters and allowed keys: the model's own
    model.load_state_dict(full, strict=True)


def load_detector_weights(model: nn.Module, weights: WeightsEnum) -> None:
    """torchvision detector weights from torch's cache. The class predictor is kept from the
    model (not loaded) when its number of classes differs, as usual for fine-tuning."""
    state, path = load_cached_weights(weights, "model.weights")
    own = model.state_dict()
    head = "roi_heads.box_predictor."
    if any(k.startswith(head) and k in own and v.shape != own[k].shape for k, v in state.items()):
        log.info("model.weights: %s: the class predictor is trained from scratch (other classes)", path)
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        load_state_checked(model, state, path, "detector", allow_missing=(head,))
    else:
        load_state_checked(model, state, path, "detector")


def load_checkpoint_weights(model: nn.Module, path: str) -> None:
    """``model.checkpoint``: a detkd checkpoint (its ``model``) or a plain state dict, loaded whole."""
    load_state_checked(model, read_checkpoint(path).weights, path, "checkpoint")
