"""Fixtures of the bench tests: one CPU thread, and tiny untrained models."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from detkd.bench.runner import BenchOptions
from detkd.config import ModelSection, RoISection, RPNSection



@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every bench test on one torch thread (tests/conftest.py)."""


def tiny_model(preset: str = "tiny", size: int = 64, proposals: int = 50, detections: int = 20) -> ModelSection:
    """A preset at ``size`` px with few proposals and detections."""
    return ModelSection(preset=preset, min_size=size, max_size=size,
                        rpn=RPNSection(pre_nms_top_n_test=200, post_nms_top_n_test=proposals),
                        roi=RoISection(detections_per_img=detections))


@pytest.fixture
def tiny() -> Callable[..., ModelSection]:
    """:func:`tiny_model`, for the tests."""
    return tiny_model


@pytest.fixture
def fast() -> BenchOptions:
    """Tiny runs: 1 warm-up, 2 timed batch-1 forwards, 1 batch of 8, a 96x128 image, 1 thread."""
    return BenchOptions(threads=1, runs=2, warmup=1, batch_runs=1, input_hw=(96, 128))
