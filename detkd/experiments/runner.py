"""Resumable cells: train (or distil) one config, then score its last checkpoint.

A *cell* is one training run of a grid: one of the demo's five models, or one term and seed of
an ablation. Its run directory holds the usual run files (``config.yaml``, ``last.pt``,
``metrics.jsonl``) and, once training and evaluation are over, ``cell.json`` with the metrics
of every split asked for. So a grid that is killed and started again

- never retrains a cell that has its ``cell.json`` (it is read back);
- resumes a cell that has ``last.pt`` but no ``cell.json`` from its last checkpoint;
- starts the others.

Cells are scored on their **last** checkpoint, never on a ``best.pt`` picked on the split that
is reported (that would tune on the test split); the evaluation during training is switched
off (``train.eval_every=0``), as it would only cost time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from detkd.config import Config, DistillConfig, UnlabeledSection, load_any_config
from detkd.distill.build import build_distill_task, resolve_student_init
from detkd.engine.inference import evaluate_checkpoint
from detkd.engine.trainer import train
from detkd.errors import DetkdError
from detkd.utils.io import atomic_write

log = logging.getLogger("detkd")

CELL_FILE = "cell.json"
AP50_METRIC, MAP_METRIC = "voc.mAP", "coco.AP"  # VOC2010+ all-point AP at IoU 0.5; COCO AP@[.5:.95]


@dataclass(frozen=True)
class Cell:
    """One run of a grid: ``config`` with ``overrides``, scored on ``splits`` (split names, or the
    roles ``train`` / ``test`` for the config's ``data.train_split`` / ``data.test_split``)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("test",)
    plain: bool = False  # train the student of a distillation config alone (its baseline)
    checkpoint: str | None = None  # score this trained checkpoint instead of training
    score_data: str | None = None  # score on the data section of this config file (e.g. the students')


@dataclass
class CellResult:
    """A finished cell: ``metrics[split]`` is the evaluator output (family -> metrics)."""

    name: str
    run_dir: str
    checkpoint: str
    metrics: dict[str, dict[str, Any]]
    train_seconds: float
    classes: list[str] = field(default_factory=list)
    eval_seconds: float = 0.0
    reused: bool = False  # read back from cell.json, not run by this process
    source: dict[str, Any] = field(default_factory=dict)  # the cell it ran: config, overrides, checkpoint

    def metric(self, name: str, split: str = "test") -> float | None:
        """``family.key`` (e.g. ``voc.mAP``) on ``split``, None where the evaluator had none."""
        family, _, key = name.partition(".")
        value = self.metrics.get(split, {}).get(family, {}).get(key)
        return float(value) if isinstance(value, (int, float)) else None


def cell_config(cell: Cell, run_dir: str) -> Config:
    """The cell's config: its file, its overrides, its run directory, no evaluation in training.
    A ``plain`` cell of a distillation config is its student's :class:`Config` alone, starting
    where the distilled student starts (``student.init``)."""
    overrides = [*cell.overrides, f"output_dir={run_dir}", "train.eval_every=0"]
    cfg = load_any_config(cell.config, overrides)
    if cell.plain and isinstance(cfg, DistillConfig):
        cfg = resolve_student_init(cfg)
        cfg = Config(**{f.name: getattr(cfg, f.name) for f in fields(Config)})
        # the baseline learns from labels only: a transfer set needs the teacher it does not have
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unlabeled=UnlabeledSection()))
    return cfg


def split_name(cfg: Config, split: str) -> str | None:
    """The split a role stands for (``train`` / ``test``), or the name itself."""
    if split == "train":
        return cfg.data.train_split
    if split == "test":
        return cfg.data.test_split
    return split


def cell_finished(run_dir: str) -> bool:
    """Whether the cell in ``run_dir`` has ended: its ``cell.json`` is written."""
    return os.path.exists(os.path.join(run_dir, CELL_FILE))


def run_cell(cell: Cell, run_dir: str) -> CellResult:
    """Train and score ``cell`` in ``run_dir``, or read it back when it is finished (``cell.json``)."""
    done = os.path.join(run_dir, CELL_FILE)
    if cell_finished(run_dir):
        log.info("%s: finished earlier, read from %s", cell.name, done)
        return dataclasses.replace(read_cell(done, cell), reused=True)
    os.makedirs(run_dir, exist_ok=True)
    cfg = cell_config(cell, run_dir)
    if cell.checkpoint:
        if not os.path.isfile(cell.checkpoint):
            raise DetkdError(f"{cell.checkpoint}: checkpoint of {cell.name} not found")
        seconds, checkpoint = 0.0, cell.checkpoint
    else:
        seconds, checkpoint = train_cell(cfg), os.path.join(run_dir, "last.pt")
    metrics, classes, start = {}, [], time.perf_counter()
    scored = scoring_config(cfg, cell.score_data)
    for split in cell.splits:
        outcome = evaluate_cell(scored, checkpoint, split)
        metrics[split], classes = outcome.metrics, list(outcome.classes)
    result = CellResult(cell.name, run_dir, checkpoint, metrics, seconds, classes, time.perf_counter() - start,
                        source=cell_source(cell))
    with atomic_write(done) as f:
        json.dump(asdict(result), f, indent=1)
    return result


def scoring_config(cfg: Config, data_from: str | None) -> Config:
    """``cfg`` with the data section of the config file ``data_from`` (None: unchanged)."""
    if data_from is None:
        return cfg
    return dataclasses.replace(cfg, data=load_any_config(data_from).data)


def train_cell(cfg: Config) -> float:
    """Train (distil, for a :class:`DistillConfig`) with ``--resume`` semantics; -> wall seconds."""
    start = time.perf_counter()
    if isinstance(cfg, DistillConfig):
        train(cfg, resume=True, task_builder=build_distill_task)
    else:
        train(cfg, resume=True)
    return time.perf_counter() - start


def evaluate_cell(cfg: Config, checkpoint: str, split: str):  # -> detkd.engine.inference.EvalOutcome
    """Score ``checkpoint`` on ``split``; the detections go to ``<run>/<split>_results.json``."""
    name = split_name(cfg, split)
    results = os.path.join(os.path.expanduser(cfg.output_dir), f"{split}_results.json")
    return evaluate_checkpoint(cfg, checkpoint, split=name, results_path=results)


def cell_source(cell: Cell) -> dict[str, Any]:
    """What identifies a cell's run: its config file, overrides, given checkpoint (and the data
    it is scored on, when that is another config's)."""
    source = {"config": os.path.abspath(cell.config), "overrides": list(cell.overrides), "plain": cell.plain,
              "checkpoint": cell.checkpoint}
    if cell.score_data:
        source["score_data"] = os.path.abspath(cell.score_data)
    return source


def read_cell(path: str, cell: Cell | None = None) -> CellResult:
    """A finished cell's ``cell.json``; a damaged file, or one written for another ``cell``
    (config or overrides changed since), is an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            result = CellResult(**json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise DetkdError(f"{path}: not a readable cell record ({e}); delete it to rerun the cell") from e
    if cell is not None and result.source != cell_source(cell):
        raise DetkdError(f"{path}: this run was made with {result.source}, not with {cell_source(cell)}; "
                         "use another output folder, or delete the run folder to train it again")
    return result
