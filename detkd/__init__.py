"""detkd: knowledge distillation for torchvision Faster R-CNN detectors.

Implements Chen et al., *Learning Efficient Object Detection Models with Knowledge
Distillation* (NeurIPS 2017) on torchvision, with the data readers, evaluators and tools
around it. See ``docs/METHOD.md`` for the method and ``docs/GUIDE.md`` for its use on your data.
"""

__version__ = "0.1.0"
