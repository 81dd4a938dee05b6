"""Which loss term drives the gradient, module by module.

For each named term ``L_k`` with weight ``w_k`` (the weights the engine sums with), one
``torch.autograd.grad(w_k * L_k, parameters)`` gives the term's own gradient; its norm on each of
the student's modules (:func:`module_groups`: backbone, FPN, RPN, RoI head) is what the term
pushes there. A term's *share* on a module is its norm over the sum of every term's norm on that
module, so the shares of a module sum to 1 (a module no term reaches has no shares). The total's
gradient is not used: terms that cancel would hide each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN

MODULES = ("backbone", "fpn", "rpn", "roi_heads")


def module_groups(student: FasterRCNN) -> dict[str, list[nn.Parameter]]:
    """The student's trainable parameters by module: ``backbone`` (the FPN's body), ``fpn``, ``rpn``,
    ``roi_heads`` (a backbone without an FPN puts everything in ``backbone``)."""
    backbone = student.backbone
    body, fpn = getattr(backbone, "body", backbone), getattr(backbone, "fpn", None)
    parts = {"backbone": body, "fpn": fpn, "rpn": student.rpn, "roi_heads": student.roi_heads}
    return {name: [p for p in part.parameters() if p.requires_grad] if part is not None else []
            for name, part in parts.items()}


def gradient_norms(losses: Mapping[str, Tensor], weights: Mapping[str, float],
                   groups: Mapping[str, list[nn.Parameter]]) -> dict[str, dict[str, float]]:
    """``{term: {module: ||d(w_k L_k) / d theta_module||}}``, one ``autograd.grad`` per term."""
    params = [p for group in groups.values() for p in group]
    owner = [name for name, group in groups.items() for _ in group]
    norms = {}
    for term, value in losses.items():
        if not value.requires_grad:
            norms[term] = dict.fromkeys(groups, 0.0)
            continue
        grads = torch.autograd.grad(weights.get(term, 1.0) * value, params, retain_graph=True, allow_unused=True)
        squares = dict.fromkeys(groups, 0.0)
        for name, grad in zip(owner, grads):
            if grad is not None:
                squares[name] += float(grad.double().pow(2).sum())
        norms[term] = {name: math.sqrt(v) for name, v in squares.items()}
    return norms


def total_gradient_norm(losses: Mapping[str, Tensor], weights: Mapping[str, float],
                        groups: Mapping[str, list[nn.Parameter]]) -> float:
    """The norm of the weighted total's gradient over the student's modules: what
    ``train.clip_grad_norm`` is compared with."""
    params = [p for group in groups.values() for p in group]
    total = sum(weights.get(term, 1.0) * value for term, value in losses.items() if value.requires_grad)
    grads = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def gradient_shares(norms: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float | None]]:
    """Each term's share of every module's summed gradient norms (None where no term reaches it)."""
    modules = list(next(iter(norms.values()), {}))
    totals = {m: sum(n[m] for n in norms.values()) for m in modules}
    return {term: {m: (n[m] / totals[m] if totals[m] > 0 else None) for m in modules} for term, n in norms.items()}


def mean_norms(batches: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The per-term, per-module norms averaged over batches (terms missing in a batch count 0)."""
    terms = list(dict.fromkeys(t for b in batches for t in b))
    modules = list(dict.fromkeys(m for b in batches for n in b.values() for m in n))
    return {t: {m: sum(b.get(t, {}).get(m, 0.0) for b in batches) / len(batches) for m in modules} for t in terms}
