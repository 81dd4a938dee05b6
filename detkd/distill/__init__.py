"""Knowledge distillation for torchvision Faster R-CNN (Chen et al. 2017 and later terms).

Importing the package registers every distillation loss (:data:`detkd.distill.losses.DISTILL_LOSSES`),
those of :mod:`detkd.distill.feature_losses` included.
"""

from detkd.distill import feature_losses, losses  # noqa: F401  (registers the losses)
