"""``detkd ablate``: Tables 4 and 5 of Chen et al. (NeurIPS 2017) for one distillation config.

A *row* (:data:`ROWS`) is a setting of the five distillation terms (``rcn_cls``, ``rpn_cls``,
``rcn_reg``, ``rpn_reg``, ``hint``): every row switches all five on or off explicitly, so the
config's own switches do not leak in, and keeps the config's other values (mu, nu, gamma, ...).
``baseline`` is the student trained alone (no teacher run). Each row is trained once per seed as
a cell (:mod:`detkd.experiments.runner`) in ``OUT/<row>/seed<S>`` and scored from its last
checkpoint on the ``train`` and ``test`` splits. The teacher is the config's
``teacher.checkpoint`` when that file exists (scored only, in ``OUT/teacher``); otherwise it is
trained first as a cell from ``teacher.config`` (``OUT/teacher``, seed 0) and every distillation
cell learns from ``OUT/teacher/last.pt``.

- Table 4 (:data:`TABLE4`): the loss designs one by one, then all together; AP50 and mAP on the
  test split, mean ± std over seeds, the AP50 gain over the baseline and the share of the
  teacher-baseline gap closed (:mod:`detkd.experiments.stats`, on the means).
- Table 5 (:data:`TABLE5`): AP50 on the training and the test split, with and without
  distillation and hints, and the gains of each over the baseline.

A cell of the same row name is the same cell in both tables (trained once). The grid is
resumable: finished cells (``cell.json``) are read back, killed ones resume from ``last.pt``.
``OUT/plan.json`` records the config and the overrides the cells were trained with; starting
again on the same OUT with others is an error (the cells would mix two settings).

Outputs in OUT (rewritten after every cell): ``table4.md``, ``table4.csv``, ``table5.md``,
``table5.csv``, ``ablation.png`` and ``ablation.json`` (every cell's scores, the aggregated rows).
Scores are fractions in ``[0, 1]``: raw floats in CSV and JSON, percent in markdown.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detkd.config import DistillConfig, is_distill_config, load_config
from detkd.config.files import find_config
from detkd.config.presets import resolve_model_config
from detkd.errors import DetkdError
from detkd.experiments.pool import run_cells
from detkd.experiments.runner import AP50_METRIC, MAP_METRIC, Cell, CellResult, cell_finished, run_cell
from detkd.experiments.stats import format_seconds, gain, gap_closed, mean_ci, mean_std, paired_differences
from detkd.utils import formatting
from detkd.utils.formatting import pct
from detkd.utils.io import atomic_write

log = logging.getLogger("detkd")

METRICS = {"ap50": AP50_METRIC, "map": MAP_METRIC}
SPLITS = ("train", "test")  # roles: data.train_split and data.test_split
TERMS = ("rcn_cls", "rpn_cls", "rcn_reg", "rpn_reg", "hint")
DEFAULT_SEEDS = 5  # paired differences over 5 seeds: the least the experiments of docs/RESULTS.md use
HINTON_T = 4.0  # Hinton KD's temperature (hinton_kd's default); T = 1 would make it CLS
PLAN_FILE = "plan.json"
OUTPUT_FILES = ("table4.md", "table4.csv", "table5.md", "table5.csv", "ablation.png", "ablation.json")
STUDENT_ONLY_PREFIXES = ("distill.", "teacher.", "model.", "student.")  # overrides of the student, not the teacher


@dataclass(frozen=True)
class Row:
    """One row of the grid. ``terms``: the settings of each term it switches on (the others are
    off), or None to keep the config's own distillation settings; ``extra``: further overrides
    (a ``--variant``'s); ``plain``: the student alone (no teacher); ``same_channels``: hints
    without adaptation."""

    name: str
    description: str
    terms: Mapping[str, Mapping[str, Any]] | None = field(default_factory=dict)
    plain: bool = False
    same_channels: bool = False
    extra: tuple[str, ...] = ()

    def overrides(self) -> tuple[str, ...]:
        """``distill.<term>.enabled=...`` for all five terms and the row's settings, then ``extra``."""
        if self.plain:
            return ()
        out = []
        for term in TERMS if self.terms is not None else ():
            settings = self.terms.get(term)
            out.append(f"distill.{term}.enabled={_yaml(settings is not None)}")
            out.extend(f"distill.{term}.{key}={_yaml(value)}" for key, value in (settings or {}).items())
        return (*out, *self.extra)


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def enabled_overrides(terms: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """``distill.<term>.enabled=true`` and the term's settings, for the given terms only."""
    return tuple(f"distill.{t}.{k}={_yaml(v)}" for t, settings in terms.items()
                 for k, v in {"enabled": True, **settings}.items())


def _both(term: str, settings: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The same settings on the RoI head and the RPN (``cls`` or ``reg``)."""
    return {f"rcn_{term}": settings, f"rpn_{term}": settings}


# The paper's settings (Chen et al. 2017, configs/_base_/distill.yaml), pinned in every paper row
# so that a config whose defaults are another recipe still gives the paper's Table 4.
PAPER_CLS = {"loss": "soft_ce", "mode": "interpolate", "mu": 0.5, "weight": 1.0, "temperature": 1.0}
PAPER_REG = {"nu": 0.5, "margin": 0.0}
PAPER_HINT = {"loss": "hint_l2", "gamma": 0.5, "levels": None, "mask": "none", "level_weighting": "equal",
              "level_weights": None}
PKD_GAMMA = 6.0  # MMRazor's PKD for Faster R-CNN: weight 6 on each FPN level, summed

CLS = _both("cls", {**PAPER_CLS, "bg_weight": 1.0})
CLS_W = _both("cls", {**PAPER_CLS, "bg_weight": 1.5})
L2 = _both("reg", {**PAPER_REG, "bounded": False})
L2_B = _both("reg", {**PAPER_REG, "bounded": True})
HINTS = {"hint": {**PAPER_HINT, "adaptation": False}}
HINTS_A = {"hint": {**PAPER_HINT, "adaptation": True}}
PKD = {"hint": {**PAPER_HINT, "loss": "pkd", "gamma": PKD_GAMMA, "level_weighting": "sum", "adaptation": True}}
# The methods of 2021-2022 with their papers' settings for Faster R-CNN (detkd.distill.feature_losses,
# detkd.distill.losses.dkd_loss): each FPN level's loss summed, as the authors' code does.
PAPER_FEATURE = {**PAPER_HINT, "level_weighting": "sum", "adaptation": True}
CWD = {"hint": {**PAPER_FEATURE, "loss": "cwd", "gamma": 5.0, "cwd_tau": 1.0}}
FGD = {"hint": {**PAPER_FEATURE, "loss": "fgd", "gamma": 1.0, "fgd_temperature": 0.5, "fgd_alpha": 5e-5,
                "fgd_beta": 2.5e-5, "fgd_gamma": 5e-5, "fgd_lambda": 5e-7}}
MGD = {"hint": {**PAPER_FEATURE, "loss": "mgd", "gamma": 1.0, "mgd_alpha": 5e-7, "mgd_ratio": 0.45}}
DKD = {"rcn_cls": {**PAPER_CLS, "loss": "dkd", "mode": "add", "weight": 1.0, "temperature": 1.0, "dkd_alpha": 1.0,
                   "dkd_beta": 0.25}}
METHODS = {"cwd": ("CWD (Shu et al. 2021): channel-wise spatial-softmax KL, tau 1, weight 5 per FPN level", CWD),
           "fgd": ("FGD (Yang et al. 2022): focal and global feature distillation, the paper's weights", FGD),
           "mgd": ("MGD (Yang et al. 2022): masked generative distillation, alpha 5e-7, 45 % masked", MGD),
           "dkd": ("DKD (Zhao et al. 2022): decoupled KD on the RoI head, alpha 1, beta 0.25, T 1, added", DKD)}

ROWS: dict[str, Row] = {r.name: r for r in (
    Row("baseline", "Baseline: the student trained alone", plain=True),
    Row("cls", "CLS: soft CE on RPN and RoI head, no background weight", CLS),
    Row("cls_w", "CLS-W: soft CE, background weight 1.5", CLS_W),
    Row("l2", "L2: plain L2 regression to the teacher's outputs (unbounded)", L2),
    Row("l2_b", "L2-B: teacher-bounded L2 regression", L2_B),
    Row("hints", "Hints: FPN hints without adaptation layers", HINTS, same_channels=True),
    Row("hints_a", "Hints-A: FPN hints through 1x1-conv adaptation layers", HINTS_A),
    Row("all", "All: CLS-W + L2-B + Hints-A (the full method)", {**CLS_W, **L2_B, **HINTS_A}),
    Row("pkd", f"PKD: standardised FPN hints through adaptation layers, weight {PKD_GAMMA:g} per level", PKD),
    Row("recipe", "Recipe: the config's own distillation settings", None),
    Row("distill", "Distillation: CLS-W + L2-B, no hints", {**CLS_W, **L2_B}),
    Row("hinton", f"Hinton KD: uniform soft CE at T={HINTON_T:g} on RPN and RoI head",
        _both("cls", {**PAPER_CLS, "loss": "hinton", "temperature": HINTON_T})),
    Row("dist", "DIST: Pearson relations of the RoI-head classes (RPN off)",
        {"rcn_cls": {**PAPER_CLS, "loss": "dist"}}),
    *(Row(name, f"{text}; the other terms off", terms) for name, (text, terms) in METHODS.items()),
    *(Row(f"recipe_{name}", f"Recipe + {text.split(':')[0]}: the config's settings with {name} (its paper's settings) "
          f"{'as the RoI-head soft term' if name == 'dkd' else 'as the hint'}", None, extra=enabled_overrides(terms))
      for name, (text, terms) in METHODS.items()),
)}
TABLE4 = ("baseline", "cls", "cls_w", "l2", "l2_b", "hints", "hints_a", "all", "pkd", "recipe")
TABLE5 = ("baseline", "distill", "hints_a", "all", "recipe")
EXTRA_TERMS = ("hinton", "dist", *METHODS, *(f"recipe_{m}" for m in METHODS))  # rows added by --terms (end of Table 4)
GRID = tuple(n for n in ROWS if n not in EXTRA_TERMS)  # the default rows


def variant_row(spec: Sequence[str]) -> Row:
    """A ``--variant NAME KEY=VALUE ...`` row: the config's own settings with these overrides."""
    if not spec or "=" in spec[0]:
        raise DetkdError(f"--variant {' '.join(spec)}: give a row name first, then KEY=VALUE overrides")
    name, overrides = spec[0], tuple(spec[1:])
    if name in ROWS or not name.replace("_", "").replace("-", "").isalnum():
        raise DetkdError(f"--variant {name}: the name must be new (not {', '.join(ROWS)}) and a plain word")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise DetkdError(f"--variant {name}: {bad[0]!r} is not KEY=VALUE")
    return Row(name, f"Variant: the config's settings with {' '.join(overrides) or 'nothing changed'}", None,
               extra=overrides)


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedCell:
    """One row and seed of the grid, as a cell and its run directory."""

    row: str
    seed: int
    cell: Cell
    run_dir: str


@dataclass
class AblationPlan:
    """What :func:`run_ablation` runs: the teacher cell first, then ``cells`` in order."""

    config: str
    out_dir: str
    seeds: int
    rows: list[str]
    teacher: Cell
    teacher_dir: str
    teacher_trained: bool  # trained here (OUT/teacher) rather than scored from teacher.checkpoint
    teacher_given: str  # the config's teacher.checkpoint
    cells: list[PlannedCell]
    unavailable: dict[str, str]  # row -> why it cannot run (e.g. hints with differing channels)
    overrides: list[str]  # applied to every cell (the command line's, and --split's)
    split_names: dict[str, str | None]  # role -> the split it names
    row_defs: dict[str, Row] = field(default_factory=lambda: dict(ROWS))  # ROWS and the --variant rows


def select_rows(rows: Sequence[str] | None = None, terms: Sequence[str] = (), variants: Sequence[str] = ()) -> list[str]:
    """The rows to run, in :data:`ROWS` order: ``baseline``, ``rows`` (default :data:`GRID`; with
    ``variants`` only, none), the extra ``terms`` (:data:`EXTRA_TERMS`), then the ``variants``.
    Unknown names are an error listing the known ones."""
    for option, names, known in (("--rows", rows or (), tuple(ROWS)), ("--terms", terms, EXTRA_TERMS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DetkdError(f"{option}: unknown row {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
    wanted = {"baseline", *(rows or (() if variants else GRID)), *terms}
    return [n for n in ROWS if n in wanted] + list(dict.fromkeys(variants))


def config_label(config: str) -> str:
    """``configs/synth/distill_small.yaml`` -> ``synth/distill_small``: the name in titles."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(config)))
    return f"{folder}/{os.path.splitext(os.path.basename(config))[0]}"


def default_out_dir(config: str) -> str:
    """``runs/ablate/<config stem>``."""
    return os.path.join("runs", "ablate", os.path.splitext(os.path.basename(config))[0])


def plan_ablation(config: str, seeds: int = DEFAULT_SEEDS, out_dir: str | None = None,
                  rows: Sequence[str] | None = None, terms: Sequence[str] = (), split: str | None = None,
                  overrides: Sequence[str] = (), variants: Sequence[Sequence[str]] = ()) -> AblationPlan:
    """The cells of the grid for the distillation ``config`` (checked, nothing trained yet).

    ``overrides`` (KEY=VALUE) apply to every cell (the teacher's: all but ``model.``, ``student.``,
    ``distill.`` and ``teacher.`` keys, which are the student's); a paper row's own settings win
    over them. ``split`` scores on that split instead of the config's test split
    (``data.test_split=NAME``). ``variants``: ``[NAME, KEY=VALUE, ...]`` rows of the config's own
    settings with those overrides (:func:`variant_row`).
    """
    extra = {row.name: row for row in map(variant_row, variants)}
    row_defs = {**ROWS, **extra}
    names = select_rows(rows, terms, list(extra))
    common = check_overrides(overrides, seeds) + ([f"data.test_split={split}"] if split else [])
    cfg = load_distill(config, common)
    out_dir = out_dir or default_out_dir(config)
    teacher, teacher_ckpt, trained = teacher_cell(cfg, out_dir, common)
    reason = hints_unavailable(cfg, teacher_overrides(common))
    unavailable = {n: reason for n in names if row_defs[n].same_channels and reason}
    cells = [planned_cell(config, row_defs[n], s, out_dir, common, teacher_ckpt)
             for n in names if n not in unavailable for s in range(seeds)]
    for n in names:  # every row's overrides are valid keys and values before hours of training
        load_config(config, planned_cell(config, row_defs[n], 0, out_dir, common, teacher_ckpt).cell.overrides,
                    schema=DistillConfig)
    split_names = {"train": cfg.data.train_split, "test": cfg.data.test_split}
    return AblationPlan(config, out_dir, seeds, names, teacher, os.path.join(out_dir, "teacher"), trained,
                        cfg.teacher.checkpoint, cells, unavailable, common, split_names, row_defs)


def check_overrides(overrides: Sequence[str], seeds: int) -> list[str]:
    """The pass-through overrides, refusing the keys the grid sets itself."""
    if seeds < 1:
        raise DetkdError(f"--seeds: at least 1 seed is needed, got {seeds}")
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key in ("seed", "output_dir"):
            option = "--seeds" if key == "seed" else "--out"
            raise DetkdError(f"{text!r}: {key} is set by ablate for each cell (use {option})")
    return list(overrides)


def load_distill(config: str, overrides: Sequence[str]) -> DistillConfig:
    """The distillation config with the common overrides; any other file is an error naming it."""
    if not os.path.isfile(find_config(config)):
        raise DetkdError(f"{config}: config file not found")
    if not is_distill_config(config):
        raise DetkdError(f"{config}: not a distillation config (no teacher: section); ablate needs one, "
                         "e.g. configs/synth/distill_small.yaml")
    cfg = load_config(config, overrides, schema=DistillConfig)
    if not cfg.teacher.config:
        raise DetkdError(f"{config}: teacher.config is empty; ablate needs the teacher's config")
    return cfg


def teacher_overrides(common: Sequence[str]) -> list[str]:
    """The common overrides that apply to the teacher (not those of the student's sections)."""
    return [o for o in common if not o.strip().startswith(STUDENT_ONLY_PREFIXES)]


def teacher_cell(cfg: DistillConfig, out_dir: str, common: Sequence[str]) -> tuple[Cell, str, bool]:
    """The teacher's cell, the checkpoint the distillation cells learn from, and whether it is
    trained here: the config's ``teacher.checkpoint`` when it exists (unless an earlier run of this
    ablation trained one in ``OUT/teacher``), else a teacher trained from ``teacher.config``."""
    teacher_dir = os.path.join(out_dir, "teacher")
    given, own = os.path.expanduser(cfg.teacher.checkpoint), os.path.join(teacher_dir, "last.pt")
    overrides = tuple(teacher_overrides(common))
    if given and os.path.isfile(given) and not os.path.exists(own):
        return Cell("teacher", cfg.teacher.config, overrides, SPLITS, checkpoint=given), given, False
    return Cell("teacher", cfg.teacher.config, (*overrides, "seed=0"), SPLITS), own, True


def hints_unavailable(cfg: DistillConfig, teacher_ovr: Sequence[str]) -> str | None:
    """Why hints without adaptation cannot run (the FPN channels differ), or None."""
    if cfg.distill.hint.loss == "attention":  # attention maps need no adaptation layer
        return None
    student = resolve_model_config(cfg.model).fpn_channels
    teacher = resolve_model_config(load_config(cfg.teacher.config, teacher_ovr).model).fpn_channels
    return None if student == teacher else f"channels differ: {student} vs {teacher}"


def planned_cell(config: str, row: Row, seed: int, out_dir: str, common: Sequence[str],
                 teacher_ckpt: str) -> PlannedCell:
    """Row ``row`` at ``seed``: the common overrides, the teacher, the row's terms, the seed."""
    teacher = () if row.plain else (f"teacher.checkpoint={teacher_ckpt}",)
    overrides = (*common, *teacher, *row.overrides(), f"seed={seed}")
    cell = Cell(f"{row.name} seed {seed}", config, overrides, SPLITS, plain=row.plain)
    return PlannedCell(row.name, seed, cell, os.path.join(out_dir, row.name, f"seed{seed}"))


# --- running -----------------------------------------------------------------------------------


class Progress:
    """Logs ``[cell k/N] row seed S (elapsed, about T left)``; the time left is the mean time of
    the cells trained so far in this invocation times the unfinished cells."""

    def __init__(self, run_dirs: Sequence[str]) -> None:
        self.run_dirs, self.done, self.start = list(run_dirs), 0, time.perf_counter()
        self.trained: list[float] = []

    def run(self, cell: Cell, run_dir: str) -> CellResult:
        """Run one cell (the next one of ``run_dirs``), logging before it."""
        finished = cell_finished(run_dir)
        pending = sum(not cell_finished(d) for d in self.run_dirs[self.done:])
        elapsed = time.perf_counter() - self.start
        left = f", about {format_seconds(pending * sum(self.trained) / len(self.trained))} left" if self.trained else ""
        state = "finished earlier, read back" if finished else f"elapsed {format_seconds(elapsed)}{left}"
        log.info("[cell %d/%d] %s (%s)", self.done + 1, len(self.run_dirs), cell.name, state)
        begin = time.perf_counter()
        result = run_cell(cell, run_dir)
        if not finished and not cell.checkpoint:  # a scored checkpoint is no training time
            self.trained.append(time.perf_counter() - begin)
        self.done += 1
        return result


def run_ablation(plan: AblationPlan, jobs: int = 1) -> dict[str, Any]:
    """Run (or read back) every cell of ``plan``, rewriting the outputs after each; -> the
    content of ``ablation.json``. ``jobs`` > 1: the unfinished cells ``jobs`` at a time, each in
    its own process with its share of the threads (:func:`run_side_by_side`)."""
    check_plan_file(plan)
    log_teacher(plan)
    for row, reason in plan.unavailable.items():
        log.info("%s: n/a (%s), not run", row, reason)
    progress = Progress([plan.teacher_dir, *(c.run_dir for c in plan.cells)])
    teacher = progress.run(plan.teacher, plan.teacher_dir)
    if jobs > 1:
        return run_side_by_side(plan, teacher, jobs)
    results: dict[tuple[str, int], CellResult] = {}
    for planned in plan.cells:  # never empty: the baseline is always there
        results[(planned.row, planned.seed)] = progress.run(planned.cell, planned.run_dir)
        summary = write_outputs(plan.out_dir, summarize(plan, teacher, results))
    return summary


def run_side_by_side(plan: AblationPlan, teacher: CellResult, jobs: int) -> dict[str, Any]:
    """The cells of ``plan`` after the teacher: finished ones read back, the others ``jobs`` at a
    time (:func:`detkd.experiments.pool.run_cells`, in the plan's order), the outputs rewritten as
    each one ends; -> the content of ``ablation.json``."""
    results: dict[tuple[str, int], CellResult] = {}
    todo = []
    for p in plan.cells:
        if cell_finished(p.run_dir):
            results[(p.row, p.seed)] = run_cell(p.cell, p.run_dir)
        else:
            todo.append(p)
    by_name, start = {p.cell.name: p for p in todo}, time.perf_counter()

    def finished(result: CellResult) -> None:
        p = by_name[result.name]
        results[(p.row, p.seed)] = result
        log.info("[cell %d/%d] %s: done (elapsed %s)", len(results) + 1, len(plan.cells) + 1, result.name,
                 format_seconds(time.perf_counter() - start))
        write_outputs(plan.out_dir, summarize(plan, teacher, in_plan_order(plan, results)))

    log.info("%d cell(s) finished earlier, %d to run, %d at a time", len(results), len(todo), jobs)
    run_cells([(p.cell, p.run_dir) for p in todo], jobs, on_done=finished)
    return write_outputs(plan.out_dir, summarize(plan, teacher, in_plan_order(plan, results)))


def in_plan_order(plan: AblationPlan, results: Mapping[tuple[str, int], CellResult]) -> dict[tuple[str, int], CellResult]:
    """``results`` in the order of ``plan.cells`` (cells side by side end in any order)."""
    return {(p.row, p.seed): results[(p.row, p.seed)] for p in plan.cells if (p.row, p.seed) in results}


def log_teacher(plan: AblationPlan) -> None:
    """Say which teacher the students learn from."""
    if not plan.teacher_trained:
        log.info("teacher: scoring the checkpoint %s (teacher.checkpoint) in %s", plan.teacher.checkpoint, plan.teacher_dir)
    elif os.path.exists(os.path.join(plan.teacher_dir, "last.pt")):
        log.info("teacher: the one trained by an earlier run in %s (teacher.checkpoint is not used)", plan.teacher_dir)
    else:
        log.info("teacher: teacher.checkpoint %r not found: training the teacher from %s in %s first (seed 0)",
                 plan.teacher_given, plan.teacher.config, plan.teacher_dir)


def check_plan_file(plan: AblationPlan) -> None:
    """Write ``OUT/plan.json``, or check that the one there has the same config and overrides."""
    path = os.path.join(plan.out_dir, PLAN_FILE)
    record = {"config": os.path.abspath(plan.config), "overrides": plan.overrides}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                earlier = json.load(f)
        except (OSError, ValueError) as e:
            raise DetkdError(f"{path}: not readable ({e}); delete it if OUT holds no cells of another setting") from e
        if {k: earlier.get(k) for k in record} != record:
            raise DetkdError(f"{path}: {plan.out_dir} holds an ablation of {earlier.get('config')} with overrides "
                             f"{earlier.get('overrides')}, not {record['config']} with {record['overrides']}; "
                             "choose another --out (or delete the folder)")
        return
    with atomic_write(path) as f:
        json.dump(record, f, indent=1)


# --- aggregation -------------------------------------------------------------------------------


def cell_scores(result: CellResult) -> dict[str, dict[str, float | None]]:
    """``{"ap50": {"train": x, "test": y}, "map": {...}}`` of one finished cell."""
    return {key: {split: result.metric(metric, split) for split in SPLITS} for key, metric in METRICS.items()}


def summarize(plan: AblationPlan, teacher: CellResult, results: Mapping[tuple[str, int], CellResult]) -> dict[str, Any]:
    """The content of ``ablation.json``: the teacher, every finished cell and every row."""
    cells = [{"row": row, "seed": seed, "run_dir": r.run_dir, "train_seconds": r.train_seconds, **cell_scores(r)}
             for (row, seed), r in results.items()]
    teacher_scores = cell_scores(teacher)
    rows = {name: row_summary(name, plan, [c for c in cells if c["row"] == name]) for name in plan.rows}
    variants = [n for n in plan.rows if n not in ROWS]
    base = rows["baseline"]
    base_cells = [c for c in cells if c["row"] == "baseline"]
    for name, entry in rows.items():
        entry["gain_ap50"] = {s: gain(entry["ap50"][s]["mean"], base["ap50"][s]["mean"]) for s in SPLITS}
        entry["gap_closed"] = {s: gap_closed(entry["ap50"][s]["mean"], base["ap50"][s]["mean"],
                                             teacher_scores["ap50"][s]) for s in SPLITS}
        entry["paired"] = paired_summary([c for c in cells if c["row"] == name], base_cells)
    return {
        "config": plan.config, "out_dir": plan.out_dir, "seeds": plan.seeds, "overrides": plan.overrides,
        "metrics": METRICS, "splits": plan.split_names,
        "teacher": {"checkpoint": teacher.checkpoint, "trained": plan.teacher_trained, **teacher_scores},
        "table4": [n for n in (*TABLE4, *EXTRA_TERMS, *variants) if n in plan.rows],
        "table5": [n for n in TABLE5 if n in plan.rows],
        "rows": rows, "cells": cells,
    }


def row_summary(name: str, plan: AblationPlan, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and std over the row's finished seeds of each metric and split."""
    stats = {key: {split: dict(zip(("mean", "std"), mean_std([c[key][split] for c in cells]))) for split in SPLITS}
             for key in METRICS}
    row = plan.row_defs[name]
    return {"description": row.description, "overrides": list(row.overrides()), "available": name not in plan.unavailable,
            "reason": plan.unavailable.get(name), "seeds_done": len(cells), **stats}


def paired_summary(cells: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per metric and split: the mean over seeds of (row - baseline) at the same seed, its 95 %
    Student-t interval (``low``, ``high``; None under two seeds) and the number of pairs ``n``."""
    out: dict[str, Any] = {}
    for key in METRICS:
        out[key] = {}
        for split in SPLITS:
            diffs = paired_differences({c["seed"]: c[key][split] for c in cells},
                                       {c["seed"]: c[key][split] for c in baseline})
            mean, low, high = mean_ci(diffs)
            out[key][split] = {"mean": mean, "low": low, "high": high, "n": len(diffs)}
    return out


# --- tables ------------------------------------------------------------------------------------

Record = dict[str, Any]


def table4_records(summary: Mapping[str, Any]) -> list[Record]:
    """Table 4 as flat records (raw floats): the teacher, then each row on the test split."""
    t = summary["teacher"]
    out = [{"row": "teacher", "description": teacher_description(summary), "ap50_mean": t["ap50"]["test"],
            "ap50_std": None, "map_mean": t["map"]["test"], "map_std": None, "gain_ap50": None,
            "gap_closed": None, **paired_columns(None), "seeds_done": None, "note": None}]
    for name in summary["table4"]:
        r = summary["rows"][name]
        out.append({"row": name, "description": r["description"], "ap50_mean": r["ap50"]["test"]["mean"],
                    "ap50_std": r["ap50"]["test"]["std"], "map_mean": r["map"]["test"]["mean"],
                    "map_std": r["map"]["test"]["std"], "gain_ap50": r["gain_ap50"]["test"],
                    "gap_closed": r["gap_closed"]["test"], **paired_columns(r), "seeds_done": r["seeds_done"],
                    "note": row_note(r)})
    return out


def paired_columns(row: Mapping[str, Any] | None, split: str = "test", prefix: str = "") -> Record:
    """``paired_gain``, ``ci95_low``, ``ci95_high`` (AP50) and ``paired_gain_map`` of a row on
    ``split`` (None for the teacher, and for the baseline, which is its own pair)."""
    keys = ("paired_gain", "ci95_low", "ci95_high", "paired_gain_map")
    if row is None or row.get("paired") is None:
        return {prefix + k: None for k in keys}
    ap50, map_ = row["paired"]["ap50"][split], row["paired"]["map"][split]
    return dict(zip((prefix + k for k in keys), (ap50["mean"], ap50["low"], ap50["high"], map_["mean"])))


def table5_records(summary: Mapping[str, Any]) -> list[Record]:
    """Table 5 as flat records: AP50 on the training and the test split, and the gains."""
    t = summary["teacher"]
    out = [{"row": "teacher", "description": teacher_description(summary), "train_ap50_mean": t["ap50"]["train"],
            "train_ap50_std": None, "test_ap50_mean": t["ap50"]["test"], "test_ap50_std": None,
            "gain_train_ap50": None, "gain_test_ap50": None, **paired_columns(None, "train", "train_"),
            **paired_columns(None), "seeds_done": None, "note": None}]
    for name in summary["table5"]:
        r = summary["rows"][name]
        out.append({"row": name, "description": r["description"],
                    "train_ap50_mean": r["ap50"]["train"]["mean"], "train_ap50_std": r["ap50"]["train"]["std"],
                    "test_ap50_mean": r["ap50"]["test"]["mean"], "test_ap50_std": r["ap50"]["test"]["std"],
                    "gain_train_ap50": r["gain_ap50"]["train"], "gain_test_ap50": r["gain_ap50"]["test"],
                    **paired_columns(r, "train", "train_"), **paired_columns(r), "seeds_done": r["seeds_done"],
                    "note": row_note(r)})
    return out


def teacher_description(summary: Mapping[str, Any]) -> str:
    how = "trained here, seed 0" if summary["teacher"]["trained"] else "teacher.checkpoint"
    return f"Teacher ({how}: {summary['teacher']['checkpoint']})"


def row_note(row: Mapping[str, Any]) -> str | None:
    return None if row["available"] else f"n/a ({row['reason']})"


def seeds_cell(done: int | None, summary: Mapping[str, Any]) -> str:
    return "" if done is None else f"{done}/{summary['seeds']}"


def paired_cell(r: Record, prefix: str = "") -> str:
    """``+2.3 [+0.8, +3.8]``: the paired gain in AP50 points and its 95 % interval."""
    if r["row"] in ("teacher", "baseline") or r[prefix + "paired_gain"] is None:
        return ""
    low, high = r[prefix + "ci95_low"], r[prefix + "ci95_high"]
    interval = "" if low is None else f" [{pct(low, signed=True)}, {pct(high, signed=True)}]"
    return pct(r[prefix + "paired_gain"], signed=True) + interval


Column = tuple[str, Callable[[Record, Mapping[str, Any]], str]]
TABLE4_COLUMNS: tuple[Column, ...] = (
    ("row", lambda r, s: r["row"]),
    ("description", lambda r, s: r["description"]),
    ("AP50 (%)", lambda r, s: r["note"] or pct(r["ap50_mean"], std=r["ap50_std"])),
    ("mAP (%)", lambda r, s: "-" if r["note"] else pct(r["map_mean"], std=r["map_std"])),
    ("AP50 gain", lambda r, s: "" if r["row"] == "teacher" else pct(r["gain_ap50"], signed=True)),
    ("paired AP50 gain [95% CI]", lambda r, s: paired_cell(r)),
    ("paired mAP gain",
     lambda r, s: "" if r["row"] in ("teacher", "baseline") else pct(r["paired_gain_map"], signed=True)),
    ("gap closed (%)", lambda r, s: "" if r["row"] == "teacher" else pct(r["gap_closed"])),
    ("seeds", lambda r, s: seeds_cell(r["seeds_done"], s)),
)
TABLE5_COLUMNS: tuple[Column, ...] = (
    ("row", lambda r, s: r["row"]),
    ("train AP50 (%)", lambda r, s: r["note"] or pct(r["train_ap50_mean"], std=r["train_ap50_std"])),
    ("test AP50 (%)", lambda r, s: "-" if r["note"] else pct(r["test_ap50_mean"], std=r["test_ap50_std"])),
    ("train gain", lambda r, s: "" if r["row"] == "teacher" else pct(r["gain_train_ap50"], signed=True)),
    ("test gain", lambda r, s: "" if r["row"] == "teacher" else pct(r["gain_test_ap50"], signed=True)),
    ("paired train gain [95% CI]", lambda r, s: paired_cell(r, "train_")),
    ("paired test gain [95% CI]", lambda r, s: paired_cell(r)),
    ("seeds", lambda r, s: seeds_cell(r["seeds_done"], s)),
)


def markdown_table(records: Sequence[Record], columns: Sequence[Column], summary: Mapping[str, Any]) -> str:
    """The records as a markdown table, a column a ``(header, cell)`` of ``columns``."""
    rows = [[fn(r, summary) for _, fn in columns] for r in records]
    return "\n".join(formatting.markdown_table([c[0] for c in columns], rows))


def table4_markdown(summary: Mapping[str, Any]) -> str:
    """Table 4 in markdown, with a title and what the numbers are."""
    splits = summary["splits"]
    head = (f"## Table 4: distillation terms, {config_label(summary['config'])}\n\n"
            f"AP50 (VOC all-point AP at IoU 0.5) and mAP (COCO AP@[.5:.95]) on the split `{splits['test']}`, "
            f"in %, mean ± std over seeds; gain over the baseline and share of the teacher-baseline gap "
            f"closed on the means; paired gain: the mean over seeds of (row - baseline) at the same seed "
            f"(same initial weights and data order), in AP50 points, with its 95 % Student-t interval.\n\n")
    return head + markdown_table(table4_records(summary), TABLE4_COLUMNS, summary) + "\n"


def table5_markdown(summary: Mapping[str, Any]) -> str:
    """Table 5 in markdown: AP50 on the training and the test split."""
    splits = summary["splits"]
    head = (f"## Table 5: train vs test AP50, {config_label(summary['config'])}\n\n"
            f"AP50 in % on the training split `{splits['train']}` and the split `{splits['test']}`, "
            "mean ± std over seeds, the gains of each over the baseline, and the paired gains (mean "
            "over seeds of the per-seed difference) with their 95 % intervals.\n\n")
    return head + markdown_table(table5_records(summary), TABLE5_COLUMNS, summary) + "\n"


def write_csv(path: str, records: Sequence[Record]) -> None:
    """Records as CSV: floats as ``repr`` (they read back equal), None as an empty field."""
    with atomic_write(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(list(records[0]))
        writer.writerows([["" if v is None else repr(v) if isinstance(v, float) else v for v in r.values()]
                          for r in records])


def write_outputs(out_dir: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Every file of :data:`OUTPUT_FILES` in ``out_dir``; -> ``summary``."""
    for name, text in (("table4.md", table4_markdown(summary)), ("table5.md", table5_markdown(summary))):
        with atomic_write(os.path.join(out_dir, name)) as f:
            f.write(text)
    write_csv(os.path.join(out_dir, "table4.csv"), table4_records(summary))
    write_csv(os.path.join(out_dir, "table5.csv"), table5_records(summary))
    plot_ablation(summary, os.path.join(out_dir, "ablation.png"))
    with atomic_write(os.path.join(out_dir, "ablation.json")) as f:
        json.dump(summary, f, indent=1)
    return summary


# --- the figure --------------------------------------------------------------------------------


def plot_ablation(summary: Mapping[str, Any], path: str) -> str:
    """Horizontal bars of each row's mean test AP50 (std as error bars), dashed lines at the
    teacher's and the baseline's; -> ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(n, r) for n, r in summary["rows"].items() if r["ap50"]["test"]["mean"] is not None]
    fig = Figure(figsize=(7, 1.2 + 0.45 * max(len(rows), 1)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    means = [100 * r["ap50"]["test"]["mean"] for _, r in rows]
    stds = [100 * (r["ap50"]["test"]["std"] or 0.0) for _, r in rows]
    colors = ["#9e9e9e" if n == "baseline" else "#08519c" if n == "all" else "#6baed6" for n, _ in rows]
    ax.barh(range(len(rows)), means, xerr=stds, color=colors, capsize=3)
    ax.set_yticks(range(len(rows)), [n for n, _ in rows])
    ax.invert_yaxis()
    for value, label, style in ((summary["teacher"]["ap50"]["test"], "teacher", "#252525"),
                                (summary["rows"]["baseline"]["ap50"]["test"]["mean"], "baseline", "#9e9e9e")):
        if value is not None:
            ax.axvline(100 * value, linestyle="--", color=style, label=f"{label} {100 * value:.1f}")
    ax.set_xlim(left=0)
    ax.set_xlabel(f"AP50 (%) on {summary['splits']['test']}, mean ± std over seeds")
    ax.set_title(f"ablation: {config_label(summary['config'])} ({summary['seeds']} seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
