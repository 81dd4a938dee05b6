"""CPU presets: Faster R-CNN configurations that train from scratch on a laptop-class CPU.

``model.preset: NAME`` fills in a :class:`~detkd.config.ModelSection`. The rule, in one line:
**a preset supplies the value of every field it names that is still at its schema default; a
value you set that differs from the schema default wins.** So ``preset: small`` with
``min_size: 160`` is the small model at 160 px, and ``preset: tiny`` with ``rpn.post_nms_top_n_test:
300`` keeps every other tiny setting. The one thing a preset cannot express is a field set *to*
its schema default (``norm: frozen_bn`` under a preset that uses ``gn``): leave out the preset for
that. :func:`resolve_model_config` applies the rule and returns a config with ``preset: null``
whose every field is explicit (what an export records).

Every preset trains from scratch: GroupNorm in the backbone and the FPN (batches are 2-8 images),
every stage trainable, narrow FPN and box head, few proposals, small anchors for 320 px inputs.
Their speed on 2 CPU cores is measured by ``bench/model_speed.py`` (see docs/SPEED.md).

This module imports no other part of the config package: the schema checks a model's sizes
with its preset applied.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from detkd.errors import DetkdError

if TYPE_CHECKING:  # for the annotations only: the schema imports this module
    from detkd.config.schema import ModelSection

PRESETS: dict[str, dict[str, Any]] = {
    # teacher-sized: ResNet-18 + GroupNorm, 5 FPN levels (strides 4..64) of 128 channels
    "small": {
        "backbone": "resnet18",
        "norm": "gn",
        "trainable_layers": -1,
        "fpn_channels": 128,
        "returned_layers": [1, 2, 3, 4],
        "min_size": 320,
        "max_size": 533,
        "rpn": {
            "anchor_sizes": [8, 16, 32, 64, 128],
            "pre_nms_top_n_train": 1000,
            "post_nms_top_n_train": 300,
            "pre_nms_top_n_test": 500,
            "post_nms_top_n_test": 100,
            "batch_size_per_image": 256,
        },
        "roi": {"box_head_width": 256, "batch_size_per_image": 128},
    },
    # student-sized: MobileNetV3-Large + GroupNorm, 5 FPN levels (strides 4..64) of 64 channels
    "tiny": {
        "backbone": "mobilenet_v3_large",
        "norm": "gn",
        "trainable_layers": -1,
        "fpn_channels": 64,
        "returned_layers": [1, 2, 3, 4],
        "min_size": 320,
        "max_size": 533,
        "rpn": {
            "anchor_sizes": [8, 16, 32, 64, 128],
            "pre_nms_top_n_train": 600,
            "post_nms_top_n_train": 200,
            "pre_nms_top_n_test": 300,
            "post_nms_top_n_test": 100,
            "batch_size_per_image": 256,
        },
        "roi": {"box_head_width": 128, "batch_size_per_image": 128},
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def resolve_model_config(cfg: ModelSection) -> ModelSection:
    """``cfg`` with its preset applied (see the module docstring) and ``preset`` set to None.

    A config without a preset comes back as an equal copy. Applying it twice changes nothing.
    """
    out = copy.deepcopy(cfg)
    if cfg.preset is None:
        return out
    if cfg.preset not in PRESETS:
        raise DetkdError(f"model.preset: unknown preset {cfg.preset!r} (known: {', '.join(preset_names())})")
    fill_defaults(out, PRESETS[cfg.preset], "model")
    out.preset = None
    return out


def fill_defaults(section: Any, values: dict[str, Any], key: str) -> None:
    """Set each field of ``section`` named in ``values`` that equals its schema default."""
    defaults = type(section)()
    for name, value in values.items():
        if not hasattr(defaults, name):
            raise DetkdError(f"preset field {key}.{name} is not in the schema")  # a detkd bug
        if isinstance(value, dict):
            fill_defaults(getattr(section, name), value, f"{key}.{name}")
        elif getattr(section, name) == getattr(defaults, name):
            setattr(section, name, copy.deepcopy(value))
