"""detkd: knowledge distillation for torchvision Faster R-CNN detectors.

Implements Chen et al., *Learning Efficient Object Detection Models with Knowledge
Distillation* (NeurIPS 2017) on torchvision, with the data readers, evaluators and tools
around it. See ``docs/METHOD.md`` for the method and ``docs/GUIDE.md`` for its use on your data.

detkd makes no network call the user did not ask for: albumentations looks for a newer version
on PyPI whenever it is imported (a DNS lookup, an HTTPS connection, a warning offline) unless
``NO_ALBUMENTATIONS_UPDATE`` is set, so it is set here, before any detkd module imports it (set
the variable to 0 to have the check).
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
