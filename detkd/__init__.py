"""detkd: knowledge distillation for torchvision Faster R-CNN detectors.

Implements Chen et al., *Learning Efficient Object Detection Models with Knowledge
Distillation* (NeurIPS 2017) on torchvision, with the data readers, evaluators and tools
around it. See ``docs`` and ``../shared/docs/method.md`` for the method.
"""

__version__ = "0.1.0"
