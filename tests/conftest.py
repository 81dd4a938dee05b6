"""Shared fixtures: the real data beside the project, and a small embedded dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
