"""Shared fixtures: the real data beside the project, and a small embedded dataset."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DETKD_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A folder of ``../shared/data``; skips the test, saying which folder, when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set DETKD_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    return shared_path("bccd", "BCCD")


@pytest.fixture(scope="session")
def kitti_root() -> Path:
    return shared_path("kitti_tiny")


@pytest.fixture(scope="session")
def coco_root() -> Path:
    return shared_path("coco128")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread, restored after: on a busy 2-core machine two OpenMP threads wait on each
    other and a step can take 20x longer. Test folders that want it everywhere use it autouse."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
