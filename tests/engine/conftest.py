"""Fixtures of the engine tests (``synth_root``, ``make_config`` and ``trained_tiny`` are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every engine test on one torch thread (tests/conftest.py); the killed runs the tests start
    get ``OMP_NUM_THREADS=1`` too."""
