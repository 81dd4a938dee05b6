"""``detkd demo``: teacher, two baseline students and their distilled versions, side by side.

The steps, each resumable (a killed demo started again skips what is done):

1. ``train``: the five models of a config folder, in this order, as cells
   (:mod:`detkd.experiments.runner`): ``teacher`` (``teacher.yaml``), ``student_small``
   (``student_small.yaml``: a smaller architecture), ``student_small_kd`` (``distill_small.yaml``:
   the same student distilled from the teacher just trained), ``student_lowres``
   (``student_lowres.yaml``: the teacher's architecture at a lower input resolution) and
   ``student_lowres_kd`` (``distill_lowres.yaml``). Every model is scored on the test split
   from its last checkpoint.
2. ``bench``: latency, FLOPs and parameters of the five trained models (:mod:`detkd.bench`).
3. ``report``: ``report.md``, the figures and ``summary.json`` (:mod:`detkd.experiments.report`).

Run folders go to ``OUT/runs/<model>``, the report to ``OUT``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from detkd.errors import DetkdError
from detkd.experiments.runner import Cell, CellResult, run_cell
from detkd.experiments.stats import format_seconds

log = logging.getLogger("detkd")


@dataclass(frozen=True)
class DemoModel:
    """One of the demo's five models: its config file in the folder, the baseline it is a distilled
    version of (None for the others), and its nominal share of the demo's time (for the ETA)."""

    name: str
    config: str
    baseline: str | None
    share: float


MODELS: tuple[DemoModel, ...] = (
    DemoModel("teacher", "teacher.yaml", None, 0.38),
    DemoModel("student_small", "student_small.yaml", None, 0.10),
    DemoModel("student_small_kd", "distill_small.yaml", "student_small", 0.15),
    DemoModel("student_lowres", "student_lowres.yaml", None, 0.16),
    DemoModel("student_lowres_kd", "distill_lowres.yaml", "student_lowres", 0.19),
)
BENCH_SHARE = 0.015  # what is left (0.005) is the report; shares as measured on configs/synth
DEFAULT_DATA = "configs/synth"


class StageClock:
    """Prints ``[demo k/N] step (elapsed, about T left)``; the time left is the elapsed time
    scaled by the nominal shares of the steps done and to do."""

    def __init__(self, shares: Sequence[float]) -> None:
        self.shares, self.done, self.start = list(shares), 0, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float | None:
        """Seconds left: the elapsed time over the shares done, times the shares to do."""
        spent = sum(self.shares[: self.done])
        if spent <= 0 or self.elapsed() < 1:
            return None
        return sum(self.shares[self.done:]) * self.elapsed() / spent

    def begin(self, what: str) -> None:
        left = self.left()
        rest = "" if left is None else f", about {format_seconds(left)} left"
        log.info("[demo %d/%d] %s (elapsed %s%s)", self.done + 1, len(self.shares), what,
                 format_seconds(self.elapsed()), rest)

    def end(self) -> None:
        self.done += 1


def config_paths(config_dir: str) -> dict[str, str]:
    """The five config files of ``config_dir``; a missing one is an error naming it."""
    if not os.path.isdir(config_dir):
        raise DetkdError(f"{config_dir}: not a folder of demo configs (e.g. {DEFAULT_DATA})")
    paths = {m.name: os.path.join(config_dir, m.config) for m in MODELS}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        need = ", ".join(m.config for m in MODELS)
        raise DetkdError(f"{config_dir}: missing {', '.join(missing)} (a demo folder holds {need})")
    return paths


def demo_cells(config_dir: str, out_dir: str, seed: int) -> list[tuple[Cell, str]]:
    """The five cells and their run folders; the distilled ones learn from this demo's teacher."""
    paths = config_paths(config_dir)
    teacher_ckpt = os.path.join(out_dir, "runs", "teacher", "last.pt")
    cells = []
    for model in MODELS:
        overrides = [f"seed={seed}"]
        if model.baseline is not None:
            overrides.append(f"teacher.checkpoint={teacher_ckpt}")
        cells.append((Cell(model.name, paths[model.name], tuple(overrides)), os.path.join(out_dir, "runs", model.name)))
    return cells


def train_models(config_dir: str, out_dir: str, seed: int, clock: StageClock) -> dict[str, CellResult]:
    """Train and score the five models (each skipped when done, resumed when killed)."""
    results = {}
    for cell, run_dir in demo_cells(config_dir, out_dir, seed):
        clock.begin(f"train and evaluate {cell.name} ({cell.config})")
        results[cell.name] = run_cell(cell, run_dir)
        clock.end()
    return results


def run_demo(config_dir: str = DEFAULT_DATA, out_dir: str | None = None, seed: int = 0) -> dict:
    """The whole demo; -> the content of ``summary.json``."""
    from detkd.experiments.report import bench_models, write_report

    out_dir = out_dir or default_out_dir(config_dir, seed)
    clock = StageClock([*(m.share for m in MODELS), BENCH_SHARE, 1.0 - BENCH_SHARE - sum(m.share for m in MODELS)])
    results = train_models(config_dir, out_dir, seed, clock)
    clock.begin("benchmark the five models (latency, FLOPs, parameters)")
    rows = bench_models(results, config_paths(config_dir))
    clock.end()
    clock.begin("write the report")
    summary = write_report(out_dir, config_dir, seed, results, rows, wall_s=clock.elapsed() + reused_seconds(results))
    clock.end()
    return summary


def reused_seconds(results: dict[str, CellResult]) -> float:
    """The training and evaluation time of the models an earlier (killed) demo finished."""
    return sum(r.train_seconds + r.eval_seconds for r in results.values() if r.reused)


def default_out_dir(config_dir: str, seed: int) -> str:
    """``runs/demo`` for the embedded dataset, ``runs/demo-<folder>`` for another; ``-seedS`` when S != 0."""
    name = os.path.basename(os.path.normpath(config_dir))
    base = "runs/demo" if os.path.normpath(config_dir) == os.path.normpath(DEFAULT_DATA) else f"runs/demo-{name}"
    return base if seed == 0 else f"{base}-seed{seed}"
