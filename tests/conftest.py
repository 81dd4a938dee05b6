"""Shared fixtures: the real data beside the project, and a small embedded dataset."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from detkd.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DETKD_SHARED_DATA", REPO.parent / "shared" / "data"))
SYNTH_IMAGES = 15
STUDENT_SMALL = REPO / "configs" / "synth" / "student_small.yaml"
# the ``tiny`` preset's own widths: student_small.yaml widens them to the teacher's (to inherit its
# heads); the tests' small models keep the preset's
TINY_WIDTHS = ("model.fpn_channels=64", "model.roi.box_head_width=128")
# The tiny preset overfitting 8 embedded images (tests/engine/test_learning.py checks AP50 >= 0.9
# on them): AdamW with a short warmup and cosine decay, no augmentation, 160 iterations of batch 2.
LEARN_EPOCHS = 40
LEARN = ("data.train_split=first8", "data.test_split=first8", "data.augment.hflip=0", f"train.epochs={LEARN_EPOCHS}",
         "train.batch_size=2", "train.lr=3e-3", "train.warmup_iters=20", f"train.eval_every={LEARN_EPOCHS}",
         "train.log_every=20")


def synth_overrides(root: Path) -> list[str]:
    """Overrides that point a synth config at the generated copy of :func:`synth_root`."""
    return [f"data.root={root}", f"data.synth.images={SYNTH_IMAGES}", "data.synth.seed=0",
            "data.synth.profile=standard", "data.num_workers=0", "device=cpu"]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 images of the embedded dataset: 12 train, 3 test (an odd number, for sharding over 2
    ranks), and a split ``first8`` of the first 8 training images."""
    from detkd.data.synth import ensure_synth

    root = Path(ensure_synth(str(tmp_path_factory.mktemp("synth")), SYNTH_IMAGES, 0))
    main = root / "voc" / "ImageSets" / "Main"
    train = (main / "train.txt").read_text().split()
    (main / "first8.txt").write_text("\n".join(train[:8]) + "\n")
    return root


@pytest.fixture(scope="session")
def synth_args(synth_root: Path) -> list[str]:
    """:func:`synth_overrides` of ``synth_root``, for a command line (``detkd distill CFG *synth_args``)."""
    return synth_overrides(synth_root)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """``make_config(synth_root, *overrides)``: configs/synth/student_small.yaml (the ``tiny``
    preset) on that data, CPU, no loader workers, writing to ``tmp_path / "run"``."""

    def make(root: Path, *overrides: str, base: Path = STUDENT_SMALL) -> Config:
        widths = TINY_WIDTHS if base == STUDENT_SMALL else ()
        return load_config(base, [f"output_dir={tmp_path / 'run'}", *widths, *synth_overrides(root), *overrides])

    return make


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``, pyproject.toml's addopts) the workers share the cores: each gets
    its share of torch threads, and so do the programs it starts (``OMP_NUM_THREADS``)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], dict]) -> tuple[Path, dict]:
    """``make(folder) -> a JSON-able record``, run once per test session: under pytest-xdist the
    first worker to ask makes it in a folder that all the run's workers share, under a lock, and the
    others wait for it and read its record; -> (folder, record)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        return folder, make(folder)
    shared = tmp_path_factory.getbasetemp().parent  # this run's, above each worker's own basetemp
    folder, record = shared / name, shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            folder.mkdir()
            record.write_text(json.dumps(make(folder), default=str))
    return folder, json.loads(record.read_text())


@dataclass(frozen=True)
class TrainedTiny:
    """The test suite's trained detector: its config file, ``last.pt`` and training summary."""

    config: Path
    checkpoint: Path
    summary: dict


@pytest.fixture(scope="session")
def trained_tiny(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedTiny:
    """The ``tiny`` preset trained (:data:`LEARN`) on the 8 ``first8`` images, once a session (once
    for all xdist workers): the learning test's subject and the doctor's competent teacher."""
    from detkd.config import save_config
    from detkd.engine.trainer import train

    def make(folder: Path) -> dict:
        cfg = load_config(STUDENT_SMALL, [f"output_dir={folder / 'run'}", *TINY_WIDTHS, *synth_overrides(synth_root), *LEARN])
        with logged_on_one_thread():
            summary = train(cfg)
        save_config(cfg, folder / "config.yaml")
        return {key: value for key, value in summary.items() if key != "run_dir"}

    folder, summary = made_once(tmp_path_factory, "trained_tiny", make)
    return TrainedTiny(folder / "config.yaml", folder / "run" / "last.pt", summary)


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A teacher config (the synth teacher at 128 px) and a checkpoint of it (random weights)."""
    from detkd.config import config_to_dict
    from detkd.data.synth import SYNTH_CLASSES
    from detkd.models import build_model

    folder = tmp_path_factory.mktemp("teacher")
    config = folder / "teacher.yaml"
    config.write_text(f"_base_: {REPO / 'configs' / 'synth' / 'teacher.yaml'}\nmodel: {{min_size: 128, max_size: 192}}\n")
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg.model, len(SYNTH_CLASSES) + 1)
    checkpoint = folder / "best.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": list(SYNTH_CLASSES)}, checkpoint)
    return config, checkpoint


@pytest.fixture
def cli_error(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """``cli_error(*args)``: run ``detkd ARGS`` in this process and expect it to stop with exit
    status 2 and one error line on stderr, no traceback; -> that line (log lines may precede it)."""
    from detkd.cli import main

    def run(*args: object) -> str:
        capsys.readouterr()
        code = main([str(a) for a in args])
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if line.startswith("detkd: error:")]
        assert code == 2 and "Traceback" not in err and len(errors) == 1 and err.endswith(errors[0]), err
        return errors[0]

    return run


def forbid_network(patch: Callable[[object, str, object], None]) -> list[str]:
    """Refuse every network access from now on, and record it: DNS lookups and connections other
    than local (AF_UNIX) sockets raise, and land in the returned list, which catches the attempts
    of a library that swallows the error (albumentations' update check does). ``patch``:
    ``monkeypatch.setattr``, or ``setattr`` in a subprocess (this function is self-contained, so
    its source runs there as it is)."""
    import socket

    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., None]:
        def call(*args: object, **kwargs: object) -> None:
            attempts.append(f"{what}{args}")
            raise AssertionError(f"detkd tried to use the network: {what}{args}")

        return call

    local_connect, refused = socket.socket.connect, refuse("connect")

    def connect(sock: socket.socket, address: object) -> None:  # loader workers' local sockets stay allowed
        if sock.family != socket.AF_UNIX:
            refused(address)
        local_connect(sock, address)

    patch(socket.socket, "connect", connect)
    patch(socket, "create_connection", refuse("create_connection"))
    patch(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


@pytest.fixture(scope="session")
def no_network_prelude() -> str:
    """Python source that starts a program with the network refused (:func:`forbid_network`), the
    attempts in ``attempts``: for a subprocess, where nothing was imported before it."""
    import inspect

    return ("from __future__ import annotations\nfrom collections.abc import Callable\n\n"
            f"{inspect.getsource(forbid_network)}\nattempts = forbid_network(setattr)\n")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """No network in the test (:func:`forbid_network`); any attempt fails it, even a swallowed one."""
    attempts = forbid_network(monkeypatch.setattr)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download weights: DETKD_OFFLINE=1 (tests of the download path unset it, with
    torchvision's download served from a local file)."""
    monkeypatch.setenv("DETKD_OFFLINE", "1")


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


class LogLines(logging.Handler):
    """Collects the messages of the records it handles (level INFO and above)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def logged_on_one_thread() -> Iterator[list[str]]:
    """One torch thread, and the ``detkd`` logger's INFO messages in the yielded list; both
    restored after. For module-scoped fixtures, which can use neither ``caplog`` nor ``one_thread``."""
    logger, handler = logging.getLogger("detkd"), LogLines()
    threads, level = torch.get_num_threads(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    torch.set_num_threads(1)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def log_on_one_thread() -> Callable[[], contextlib.AbstractContextManager[list[str]]]:
    """:func:`logged_on_one_thread`, for fixtures of any scope."""
    return logged_on_one_thread
