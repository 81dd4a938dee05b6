"""The detectors: torchvision Faster R-CNN built from config, CPU presets, weights and export.

- :func:`build_model` (``detkd.models.detector``): a ``FasterRCNN`` from a ``ModelSection``;
- :data:`BACKBONES` (``detkd.models.backbones``): ResNet-18/34/50/101 and MobileNetV3-Large with FPN;
- :data:`PRESETS`, :func:`resolve_model_config` (``detkd.config.presets``): ``tiny``, ``small``;
- ``detkd.models.weights``: torchvision weights from torch's cache (downloaded on first use unless DETKD_OFFLINE), checkpoints;
- :func:`export_student`, :func:`load_exported` (``detkd.models.export``): a trained detector as a
  plain torchvision state dict with its model arguments (and ONNX).
"""

from detkd.config.presets import PRESETS, resolve_model_config
from detkd.models.backbones import BACKBONES
from detkd.models.detector import build_model
from detkd.models.export import export_student, load_exported

__all__ = ["BACKBONES", "PRESETS", "build_model", "export_student", "load_exported", "resolve_model_config"]
