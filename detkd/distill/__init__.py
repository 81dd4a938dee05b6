"""Knowledge distillation for Faster R-CNN (Chen et al., NeurIPS 2017) and its alternatives."""
