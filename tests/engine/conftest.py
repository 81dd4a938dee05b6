"""Fixtures of the engine tests: small copies of the embedded dataset and configs over them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from detkd.config import Config, load_config
from detkd.data.synth import ensure_synth

REPO = Path(__file__).resolve().parents[2]
SYNTH_IMAGES = 15
STUDENT_SMALL = REPO / "configs" / "synth" / "student_small.yaml"


def synth_overrides(root: Path) -> list[str]:
    """Overrides that point a synth config at the generated copy of :func:`synth_root`."""
    return [f"data.root={root}", f"data.synth.images={SYNTH_IMAGES}", "data.synth.seed=0",
            "data.synth.profile=standard", "data.num_workers=0", "device=cpu"]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 images of the embedded dataset: 12 train, 3 test (an odd number, for sharding over 2
    ranks), and a split ``first8`` of the first 8 training images."""
    root = Path(ensure_synth(str(tmp_path_factory.mktemp("synth")), SYNTH_IMAGES, 0))
    main = root / "voc" / "ImageSets" / "Main"
    train = (main / "train.txt").read_text().split()
    (main / "first8.txt").write_text("\n".join(train[:8]) + "\n")
    return root


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """``make_config(synth_root, *overrides)``: configs/synth/student_small.yaml (the ``tiny``
    preset) on that data, CPU, no loader workers, writing to ``tmp_path / "run"``."""

    def make(root: Path, *overrides: str, base: Path = STUDENT_SMALL) -> Config:
        return load_config(base, [f"output_dir={tmp_path / 'run'}", *synth_overrides(root), *overrides])

    return make


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every engine test on one torch thread (tests/conftest.py); the killed runs the tests start
    get ``OMP_NUM_THREADS=1`` too."""
