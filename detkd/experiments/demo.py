"""``detkd demo``: teacher, two baseline students and their distilled versions, side by side.

The steps, each resumable (a killed demo started again skips what is done):

1. ``teacher``: where the students learn from (:func:`choose_teacher`): a checkpoint given with
   ``--teacher``; the bundled teacher (:mod:`detkd.experiments.bundled`, checked before use)
   when the folder's ``teacher.yaml`` is the model it was trained as (``configs/synth``); else
   ``teacher.yaml`` trained here (``--train-teacher`` forces it).
2. ``train``: the models of a config folder, in this order, as cells
   (:mod:`detkd.experiments.runner`): ``teacher`` (scored; trained first when it is not given),
   ``student_small`` (``student_small.yaml``: a smaller architecture), ``student_small_kd``
   (``distill_small.yaml``: the same student distilled from the teacher), ``student_lowres``
   (``student_lowres.yaml``: the teacher's architecture at a lower input resolution) and
   ``student_lowres_kd`` (``distill_lowres.yaml``). Every model is scored on the test split of
   the students' data (``student_small.yaml``'s) from its last checkpoint. The teacher comes
   first; the four students then train ``jobs`` at a time, each in its own process with its share
   of the threads (:mod:`detkd.experiments.pool`; ``jobs=1``: one after the other, here).
3. ``bench``: latency, FLOPs and parameters of the five models, timed in interleaved rounds
   (:mod:`detkd.bench`); ``doctor``: the doctor's measurements of each distilled student.
4. ``report``: ``report.md``, the figures and ``summary.json`` (:mod:`detkd.experiments.report`).

Run folders go to ``OUT/runs/<model>``, the report to ``OUT``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from detkd.config import DistillConfig, load_config
from detkd.config.files import find_config
from detkd.doctor.run import run_doctor
from detkd.errors import DetkdError
from detkd.experiments.bundled import bundled_teacher, fits
from detkd.experiments.pool import run_cells
from detkd.experiments.report import bench_models, write_report
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


MODELS: tuple[DemoModel, ...] = (  # shares: the stages' times on configs/synth, 2 cores
    DemoModel("teacher", "teacher.yaml", None, 0.40),  # when it is trained here
    DemoModel("student_small", "student_small.yaml", None, 0.15),
    DemoModel("student_small_kd", "distill_small.yaml", "student_small", 0.22),
    DemoModel("student_lowres", "student_lowres.yaml", None, 0.10),
    DemoModel("student_lowres_kd", "distill_lowres.yaml", "student_lowres", 0.155),
)
SCORED_TEACHER_SHARE = 0.01  # a teacher that is only scored
BENCH_SHARE = 0.02  # bench and doctor; what is left (0.02) is the report
DEFAULT_DATA = "configs/synth"
DOCTOR_BATCHES = 2


@dataclass(frozen=True)
class TeacherChoice:
    """Where the students learn from: ``source`` is ``bundled``, ``trained`` or the given path;
    ``checkpoint`` the file; ``note`` what the log says about it."""

    source: str
    checkpoint: str
    note: str

    @property
    def trained_here(self) -> bool:
        return self.source == "trained"


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

    def end(self, steps: int = 1) -> None:
        self.done += steps


def config_paths(config_dir: str) -> dict[str, str]:
    """The five config files of ``config_dir`` (not a folder here: detkd's own folder of that name,
    e.g. ``configs/synth`` from any folder); a missing one is an error naming it."""
    config_dir = find_config(config_dir)
    if not os.path.isdir(config_dir):
        raise DetkdError(f"{config_dir}: not a folder of demo configs (e.g. {DEFAULT_DATA})")
    paths = {m.name: os.path.join(config_dir, m.config) for m in MODELS}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        need = ", ".join(m.config for m in MODELS)
        raise DetkdError(f"{config_dir}: missing {', '.join(missing)} (a demo folder holds {need})")
    return paths


def choose_teacher(config_dir: str, out_dir: str, teacher: str | None = None,
                   train_teacher: bool = False) -> TeacherChoice:
    """The teacher of the demo (see the module docstring); a damaged bundled teacher is an error
    that names the file and how to rebuild it."""
    own = os.path.join(out_dir, "runs", "teacher", "last.pt")
    if teacher and train_teacher:
        raise DetkdError("--teacher and --train-teacher: give one (a checkpoint to learn from, or train it here)")
    if teacher:
        if not os.path.isfile(teacher):
            raise DetkdError(f"{teacher}: --teacher checkpoint not found")
        return TeacherChoice(teacher, teacher, f"teacher: {teacher} (--teacher), scored, not trained")
    if train_teacher:
        return TeacherChoice("trained", own, "teacher: trained here from teacher.yaml (--train-teacher)")
    cfg = load_config(config_paths(config_dir)["teacher"])
    if cfg.data.format != "synth":
        return TeacherChoice("trained", own, f"teacher: no bundled teacher for {cfg.data.format} data: "
                             "trained here from teacher.yaml (or give one with --teacher CKPT)")
    bundled = bundled_teacher()
    why = fits(bundled, cfg)
    if why is not None:
        return TeacherChoice("trained", own, f"teacher: the bundled one does not fit {config_dir}/teacher.yaml "
                             f"({why}): trained here")
    return TeacherChoice("bundled", bundled.path, f"teacher: the bundled one ({bundled.path}, SHA-256 checked, "
                         f"AP50 {100 * bundled.test_ap50:.1f} on the demo's test split): not trained "
                         "(--train-teacher trains it again)")


def demo_cells(config_dir: str, out_dir: str, seed: int, teacher: TeacherChoice) -> list[tuple[Cell, str]]:
    """The five cells and their run folders; the distilled ones learn from ``teacher``; every one
    is scored on the students' data."""
    paths = config_paths(config_dir)
    scored_on = paths["student_small"]
    inits = baseline_inits(paths)
    cells = []
    for model in MODELS:
        run_dir = os.path.join(out_dir, "runs", model.name)
        if model.name == "teacher" and not teacher.trained_here:
            cells.append((Cell(model.name, paths[model.name], (), checkpoint=teacher.checkpoint,
                               score_data=scored_on), run_dir))
            continue
        overrides = [f"seed={seed}"]
        if model.baseline is not None:
            overrides.append(f"teacher.checkpoint={teacher.checkpoint}")
        if model.name in inits:  # starts where its distilled version starts
            overrides.append(f"model.checkpoint={teacher.checkpoint}")
            overrides.append(f"model.checkpoint_matching={str(inits[model.name] == 'inherit').lower()}")
        cells.append((Cell(model.name, paths[model.name], tuple(overrides), score_data=scored_on), run_dir))
    return cells


def baseline_inits(paths: dict[str, str]) -> dict[str, str]:
    """``{baseline: init}`` for the baselines whose distilled version has ``student.init: teacher``
    or ``inherit``: they start from the teacher's weights (all, or those that fit) too, so that each
    pair differs by the distillation alone."""
    inits = {m.baseline: load_config(paths[m.name], schema=DistillConfig).student.init
             for m in MODELS if m.baseline is not None}
    return {name: init for name, init in inits.items() if init in ("teacher", "inherit")}


def train_models(config_dir: str, out_dir: str, seed: int, teacher: TeacherChoice,
                 clock: StageClock, jobs: int = 1) -> dict[str, CellResult]:
    """Train and score the five models (each skipped when done, resumed when killed): the
    teacher first, then the four students, ``jobs`` at a time (:mod:`detkd.experiments.pool`)."""
    (teacher_cell, teacher_dir), *students = demo_cells(config_dir, out_dir, seed, teacher)
    clock.begin(f"{'evaluate' if teacher_cell.checkpoint else 'train and evaluate'} the teacher "
                f"({teacher_cell.checkpoint or teacher_cell.config})")
    results = {teacher_cell.name: run_cell(teacher_cell, teacher_dir)}
    clock.end()
    if jobs <= 1:
        for cell, run_dir in students:
            clock.begin(f"train and evaluate {cell.name} ({cell.config})")
            results[cell.name] = run_cell(cell, run_dir)
            clock.end()
        return results

    share = {m.name: m.share for m in MODELS}
    longest_first = sorted(students, key=lambda pair: -share[pair[0].name])
    clock.begin(f"train and evaluate the four students, {jobs} at a time")
    results.update(run_cells(longest_first, jobs, on_done=lambda r: log.info(
        "%s: done in %s (elapsed %s)", r.name, format_seconds(r.train_seconds + r.eval_seconds),
        format_seconds(clock.elapsed()))))
    clock.end(len(students))
    return {m.name: results[m.name] for m in MODELS}


def run_demo(config_dir: str = DEFAULT_DATA, out_dir: str | None = None, seed: int = 0,
             teacher: str | None = None, train_teacher: bool = False, jobs: int = 1) -> dict:
    """The whole demo, the students trained ``jobs`` at a time; -> the content of ``summary.json``."""
    out_dir = out_dir or default_out_dir(config_dir, seed)
    choice = choose_teacher(config_dir, out_dir, teacher, train_teacher)
    log.info("%s", choice.note)
    shares = [m.share if m.name != "teacher" or choice.trained_here else SCORED_TEACHER_SHARE for m in MODELS]
    clock = StageClock([*shares, BENCH_SHARE, BENCH_SHARE])
    results = train_models(config_dir, out_dir, seed, choice, clock, jobs)
    clock.begin("benchmark the five models (interleaved rounds) and run the doctor on the distilled students")
    rows = bench_models(results, config_paths(config_dir))
    doctor = doctor_reports(config_dir, results, choice)
    clock.end()
    clock.begin("write the report")
    summary = write_report(out_dir, config_dir, seed, results, rows, wall_s=clock.elapsed() + reused_seconds(results),
                           models=[m.name for m in MODELS], baselines=baselines(), teacher_source=choice.source,
                           doctor=doctor)
    clock.end()
    return summary


def baselines() -> dict[str, str]:
    """``{distilled model: its baseline}``."""
    return {m.name: m.baseline for m in MODELS if m.baseline is not None}


def doctor_reports(config_dir: str, results: dict[str, CellResult], teacher: TeacherChoice) -> dict[str, dict]:
    """``detkd doctor`` of each distilled student at its last checkpoint (:data:`DOCTOR_BATCHES`
    batches): ``{model: report}``."""
    paths, out = config_paths(config_dir), {}
    for model in MODELS:
        if model.baseline is None:
            continue
        cfg = load_config(paths[model.name], [f"teacher.checkpoint={teacher.checkpoint}"], schema=DistillConfig)
        out[model.name] = run_doctor(cfg, DOCTOR_BATCHES, student=results[model.name].checkpoint)
    return out


def reused_seconds(results: dict[str, CellResult]) -> float:
    """The training and evaluation time of the models an earlier (killed) demo finished."""
    return sum(r.train_seconds + r.eval_seconds for r in results.values() if r.reused)


def default_out_dir(config_dir: str, seed: int) -> str:
    """``runs/demo`` for the embedded dataset, ``runs/demo-<folder>`` for another; ``-seedS`` when S != 0."""
    name = os.path.basename(os.path.normpath(config_dir))
    base = "runs/demo" if os.path.normpath(config_dir) == os.path.normpath(DEFAULT_DATA) else f"runs/demo-{name}"
    return base if seed == 0 else f"{base}-seed{seed}"
