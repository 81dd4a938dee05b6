"""The training loop, as a sequence of named steps (detectron2-style, without the machinery).

:func:`train` is what ``detkd train`` runs::

    trainer = Trainer(cfg, info)
    with run_lock(run_dir):               # one process owns the run folder (rank 0)
        trainer.prepare_run_dir(resume)   # refuse to overwrite a run; clear stale temporaries
        trainer.build()                   # data, task (model), DDP, optimizer, schedule, AMP scaler
        trainer.maybe_resume(resume)      # last.pt: weights, optimizer, epoch/iteration, RNG
        trainer.start_log(resume)         # only now: config.yaml, metrics.jsonl
        trainer.fit()                     # per epoch: train_one_epoch, checkpoint, evaluate

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` (end of every epoch,
and every ``train.checkpoint_every`` iterations), ``best.pt`` (best ``train.metric``),
``metrics.jsonl`` and ``results.json`` (the COCO results of the latest evaluation). It is
owned by one process at a time (:mod:`detkd.engine.rundir`), and nothing is written to it
before the checks of the run folder, the metric name and a resume's config have passed.
Weights are checked before every checkpoint: non-finite weights stop the run, never replace a
good ``last.pt``.

Repeatability: the model is initialised from ``seed``; the data order depends only on
``(seed, epoch)``; checkpoints hold every RNG state. On CPU with ``data.num_workers=0`` a run
resumed from any checkpoint ends with bit-identical weights to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from detkd.config import Config, save_config, saved_run_config
from detkd.config.presets import resolve_model_config
from detkd.data.from_config import build_eval_dataset, build_train_dataset, eval_classes
from detkd.engine import data as D
from detkd.engine.checkpoint import rng_state, set_rng_state
from detkd.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    cleanup_distributed,
    init_distributed,
)
from detkd.engine.inference import evaluate_model, metric_value
from detkd.engine.logger import MetricLogger
from detkd.engine.rundir import check_run_dir, remove_stale_temporaries, run_lock
from detkd.engine.schedule import build_optimizer, build_scheduler
from detkd.engine.task import TaskBuilder, TrainTask, build_detector_task, weighted_total
from detkd.errors import DetkdError
from detkd.evaluation.build import check_metric
from detkd.utils.checkpoint import SavedRun, checkpoint_state, read_checkpoint, save_checkpoint

log = logging.getLogger("detkd")

Hook = Callable[["Trainer"], None]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, resume: bool = False, task_builder: TaskBuilder = build_detector_task,
          hooks: Sequence[Hook] = (), overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (under ``torchrun`` when its variables are set); -> the run's summary.

    ``task_builder(cfg, num_classes)`` makes what is trained (the detector by default; the
    distillation task plugs in here). ``hooks`` are called after every iteration. ``overwrite``
    replaces an earlier run in ``output_dir`` (without it, that is an error unless ``resume``).
    """
    info = init_distributed(cfg.device)
    if not info.is_main:
        log.setLevel(logging.WARNING)
    try:
        trainer = Trainer(cfg, info, task_builder, hooks)
        with run_lock(trainer.run_dir) if info.is_main else contextlib.nullcontext():
            trainer.prepare_run_dir(resume, overwrite)
            trainer.build()
            trainer.maybe_resume(resume)
            trainer.start_log(resume)
            return trainer.fit()
    finally:
        cleanup_distributed(info)


class Trainer:
    """The state of one run: what :func:`train` steps through. Attributes after :meth:`build`:

    ``task``, ``model`` (``task.module`` or its DDP wrapper), ``optimizer``, ``scheduler``,
    ``scaler``, ``train_loader``, ``eval_loader``; counters ``epoch`` (0-based, the one in
    progress), ``iteration`` (batches done in it) and ``step`` (optimizer steps in all).
    """

    def __init__(self, cfg: Config, info: DistInfo, task_builder: TaskBuilder = build_detector_task,
                 hooks: Sequence[Hook] = ()) -> None:
        # the preset expanded, so config.yaml and checkpoints say what was really built
        self.cfg = dataclasses.replace(cfg, model=resolve_model_config(cfg.model))
        self.info = info
        self.task_builder, self.hooks = task_builder, list(hooks)
        self.run_dir = os.path.expanduser(cfg.output_dir)
        self.last_path = os.path.join(self.run_dir, "last.pt")
        self.epoch = self.iteration = self.step = 0
        self.best: dict[str, Any] = {"metric": cfg.train.metric, "value": None, "epoch": None}
        self.metrics: dict[str, Any] | None = None
        self.logger = MetricLogger(self.run_dir, enabled=False)
        self.amp = cfg.train.amp and info.device.type == "cuda"
        self.is_best = False
        self.saved_step = 0  # the step of the last checkpoint written (or resumed from)
        self.window = Window()  # kept across epochs: the iteration-time median spans them

    # -- the steps ---------------------------------------------------------------------------

    def prepare_run_dir(self, resume: bool, overwrite: bool = False) -> None:
        """Check the metric name and the run folder (:func:`~detkd.engine.rundir.check_run_dir`:
        an earlier run needs ``--resume`` or ``--overwrite``); remove stale temporary files."""
        check_metric_family(self.cfg)
        if self.info.is_main:
            check_run_dir(self.run_dir, resume, overwrite)
            remove_stale_temporaries(self.run_dir)

    def start_log(self, resume: bool) -> None:
        """Once every check has passed: write ``config.yaml`` and open ``metrics.jsonl`` (a resumed
        run keeps the records up to its checkpoint, a new one starts it empty)."""
        if not self.info.is_main:
            return
        save_config(self.cfg, os.path.join(self.run_dir, "config.yaml"))
        self.logger = MetricLogger(self.run_dir, enabled=True)
        self.logger.truncate_after(self.step)

    def build(self) -> None:
        """Data, the task and its model, DDP, optimizer, schedule and AMP scaler."""
        cfg, info = self.cfg, self.info
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        self.train_set = build_train_dataset(cfg.data, cfg.seed)
        self.classes = tuple(self.train_set.classes)
        self.eval_set = build_eval_dataset(cfg.data, classes=eval_classes(cfg.data, self.classes))
        self.task: TrainTask = self.task_builder(cfg, len(self.classes) + 1)
        self.task.module.to(info.device)
        self.model = self.task.module
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            unused = getattr(self.task, "find_unused_parameters", False)
            self.model = DistributedDataParallel(self.task.module, device_ids=ids, find_unused_parameters=unused)
        self.add_transfer_set()
        seed_everything(cfg.seed + info.rank)  # ranks draw different RPN/RoI samples
        self.train_loader = D.build_train_loader(self.train_set, cfg.train.batch_size, cfg.data.num_workers, cfg.seed,
                                                 info, cfg.data.unlabeled.share)
        self.eval_loader = D.build_eval_loader(self.eval_set, cfg.data.num_workers, info)
        self.iters_per_epoch = D.iters_per_epoch(self.train_loader)
        self.optimizer = build_optimizer(self.task.module, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp)
        if cfg.train.amp and not self.amp:
            log.info("train.amp: mixed precision needs CUDA; training in float32 on %s", info.device)
        log.info("training on %d images (%d classes), %d iterations an epoch, device %s",
                 len(self.train_set), len(self.classes), self.iters_per_epoch, info.device)

    def add_transfer_set(self) -> None:
        """``data.unlabeled``: its images join the training set, for a task that labels them
        itself (``labels_unlabeled``: the distillation task, with its teacher's detections)."""
        transfer = D.load_unlabeled(self.cfg.data, self.train_set)
        if transfer is None:
            return
        if not getattr(self.task, "labels_unlabeled", False):
            raise DetkdError("data.unlabeled: images without labels need a teacher to label them: use it in a "
                             "distillation run (detkd distill), not in detkd train")
        self.train_set = D.with_transfer_set(self.train_set, transfer)
        log.info("transfer set: %d unlabeled images (%s), labelled by the teacher; %.0f %% of each epoch's samples",
                 len(transfer.records), transfer.root, 100 * self.cfg.data.unlabeled.share)

    def maybe_resume(self, resume: bool) -> None:
        """With ``--resume`` and a ``last.pt``: restore everything and continue where it stopped."""
        if not resume:
            return
        if not os.path.exists(self.last_path):
            log.info("--resume: no last.pt in %s, starting a new run", self.run_dir)
            return
        run = read_checkpoint(self.last_path, map_location=self.info.device)
        missing = run.missing_for_resume()
        if missing:
            raise DetkdError(f"{self.last_path}: cannot be resumed: it lacks {', '.join(missing)} (not a last.pt "
                             "written by detkd train or detkd distill); start a new run with --overwrite, or from "
                             "its weights with model.checkpoint")
        applied = check_resume_config(self.last_path, saved_config(run), dataclasses.asdict(self.cfg))
        self.load_state(run)
        if "train.metric" in applied:
            self.best = {"metric": self.cfg.train.metric, "value": None, "epoch": None}
        self.saved_step = self.step
        log.info("resumed %s at epoch %d, iteration %d (step %d)", self.last_path, self.epoch + 1,
                 self.iteration, self.step)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; checkpoint every epoch, then evaluate every ``eval_every``
        epochs and after the last (``last.pt`` is on disk before an evaluation may fail)."""
        epochs = self.cfg.train.epochs
        try:
            while self.epoch < epochs:
                self.train_one_epoch()
                self.epoch, self.iteration = self.epoch + 1, 0
                self.checkpoint(end_of_epoch=True)
                if self.due_for_evaluation():
                    self.evaluate()
                    self.checkpoint(end_of_epoch=True)  # last.pt with the new best, best.pt if it is
        finally:
            self.logger.close()
        return {"run_dir": self.run_dir, "epochs": self.epoch, "steps": self.step, "best": dict(self.best),
                "metrics": self.metrics, "is_main": self.info.is_main}

    def due_for_evaluation(self) -> bool:
        """After every ``eval_every``-th epoch and after the last one (never when ``eval_every`` is 0)."""
        every = self.cfg.train.eval_every
        return every > 0 and (self.epoch % every == 0 or self.epoch == self.cfg.train.epochs)

    def train_one_epoch(self) -> None:
        """The remaining batches of ``self.epoch``."""
        self.task.module.train()
        D.start_epoch(self.train_loader, self.epoch, self.iteration, self.cfg.seed)
        bar = tqdm(total=self.iters_per_epoch, initial=self.iteration, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                   disable=None if self.info.is_main else True, dynamic_ncols=True)
        window = self.window
        window.reset()
        tick = time.perf_counter()
        for images, targets in D.batches(self.train_loader):
            losses = self.train_step(images, targets)
            self.iteration, self.step = self.iteration + 1, self.step + 1
            for record in getattr(self.task, "pop_records", list)():
                self.logger.write({**record, "step": self.step, "epoch": self.epoch})
            now = time.perf_counter()
            window.add(losses, len(images) * self.info.world_size, now - tick)
            tick = now
            self.report(window, bar)
            if self.cfg.train.checkpoint_every and self.step % self.cfg.train.checkpoint_every == 0 \
                    and self.iteration < self.iters_per_epoch:
                self.checkpoint(end_of_epoch=False)
            for hook in self.hooks:
                hook(self)
        bar.close()

    def train_step(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        """One optimizer step; -> the loss terms (averaged over ranks) and their weighted total."""
        device = self.info.device
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [to_device(t, device) for t in targets]
        with torch.autocast(device.type, enabled=self.amp):
            losses = self.task.step(self.model, images, targets)
        total = weighted_total(losses, self.task.loss_weights)
        values = self.check_finite(losses, total, targets)
        weights = self.task.loss_weights
        values.update({f"{k}_weighted": weights[k] * values[k] for k in losses if weights.get(k, 1.0) != 1.0})
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.train.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return values

    def check_finite(self, losses: dict[str, torch.Tensor], total: torch.Tensor, targets: list[dict]) -> dict[str, float]:
        """Stop with an error naming the iteration and the term when a loss is NaN or infinite."""
        names = [*losses, "loss"]
        stacked = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()])
        values = dict(zip(names, all_reduce_mean(stacked, self.info).tolist()))
        bad = [f"{k} = {v}" for k, v in values.items() if k != "loss" and not math.isfinite(v)]
        if bad or not math.isfinite(values["loss"]):
            ids = ", ".join(str(t["image_id"]) for t in targets)
            raise DetkdError(
                f"non-finite loss at iteration {self.step + 1} (epoch {self.epoch + 1}, batch {self.iteration + 1}): "
                f"{'; '.join(bad) or 'loss = ' + str(values['loss'])} (images {ids}); "
                f"try a lower train.lr, train.clip_grad_norm or more train.warmup_iters"
            )
        return values

    def evaluate(self) -> dict[str, Any]:
        """Score ``task.detector`` on the test split (sharded over ranks); log; track the best."""
        tick = time.perf_counter()
        results = os.path.join(self.run_dir, "results.json") if self.info.is_main else None
        self.metrics = evaluate_model(self.task.detector, self.eval_loader, self.eval_set.index, self.info,
                                      results_path=results)
        value = metric_value(self.metrics, self.cfg.train.metric)
        self.is_best = self.best["value"] is None or value > self.best["value"]
        if self.is_best:
            self.best.update(value=value, epoch=self.epoch)
        self.logger.write({"type": "eval", "step": self.step, "epoch": self.epoch, "metrics": self.metrics,
                           "seconds": round(time.perf_counter() - tick, 3)})
        log.info("epoch %d: %s = %.4f (best %.4f at epoch %d)", self.epoch, self.cfg.train.metric, value,
                 self.best["value"], self.best["epoch"])
        return self.metrics

    def checkpoint(self, end_of_epoch: bool) -> None:
        """``last.pt`` (and ``best.pt`` after an evaluation that improved ``train.metric``), rank 0
        only, after checking that every weight is finite."""
        self.check_finite_weights()
        state = self.state_dict()  # every rank: gathers the RNG states
        if self.info.is_main:
            save_checkpoint(self.last_path, state)
            if end_of_epoch and self.is_best:
                save_checkpoint(os.path.join(self.run_dir, "best.pt"), state)
        self.saved_step = self.step
        self.is_best = False

    def check_finite_weights(self) -> None:
        """Stop, keeping the last good ``last.pt``, when a step left NaN or infinite weights."""
        bad = [name for name, p in self.task.module.state_dict().items()
               if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        if bad:
            kept = f"last.pt keeps iteration {self.saved_step}" if self.saved_step else "no last.pt was written"
            raise DetkdError(
                f"non-finite weights after iteration {self.step} (epoch {self.epoch + (self.iteration > 0)}): "
                f"{len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); not saved, {kept}; "
                "try a lower train.lr, train.clip_grad_norm or more train.warmup_iters")

    # -- helpers -----------------------------------------------------------------------------

    def report(self, window: Window, bar: tqdm) -> None:
        """Progress bar every iteration; a ``metrics.jsonl`` record every ``log_every`` iterations."""
        lr = self.optimizer.param_groups[0]["lr"]
        remaining = self.cfg.train.epochs * self.iters_per_epoch - self.step
        eta = remaining * window.seconds_per_iter()
        bar.set_postfix_str(f"loss {window.last['loss']:.3f} lr {lr:.2e} {window.img_per_s():.1f} img/s eta {format_eta(eta)}",
                            refresh=False)
        bar.update(1)
        if self.step % max(1, self.cfg.train.log_every) == 0 or self.iteration == self.iters_per_epoch:
            means = window.means()
            record = {"type": "train", "step": self.step, "epoch": self.epoch, "iter": self.iteration, "lr": lr,
                      **means, "img_per_s": round(window.img_per_s(), 3)}
            self.logger.write(record)
            if bar.disable:
                log.info("epoch %d iter %d/%d: loss %.4f lr %.2e %.1f img/s eta %s", self.epoch + 1, self.iteration,
                         self.iters_per_epoch, means["loss"], lr, window.img_per_s(), format_eta(eta))
            window.reset()

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint (see :mod:`detkd.utils.checkpoint`); the RNG states of every rank."""
        module = self.task.module
        return checkpoint_state(SavedRun(
            self.last_path,
            model=self.task.detector.state_dict(),
            module=module.state_dict() if module is not self.task.detector else None,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            epoch=self.epoch, iteration=self.iteration, step=self.step, best=dict(self.best),
            rng=all_gather_objects(rng_state(), self.info),
            classes=list(self.classes), config=dataclasses.asdict(self.cfg),
        ))

    def load_state(self, run: SavedRun) -> None:
        """Restore what :meth:`state_dict` saved (this rank's RNG state, or rank 0's); ``run``
        holds everything :meth:`SavedRun.missing_for_resume` asks for."""
        try:
            if run.module is not None:
                self.task.module.load_state_dict(run.module)
            else:
                self.task.detector.load_state_dict(run.model_state)
            self.optimizer.load_state_dict(run.optimizer)
        except (KeyError, RuntimeError, ValueError) as e:
            raise DetkdError(f"{self.last_path}: does not fit this config's model ({str(e).splitlines()[0]})") from None
        self.scheduler.load_state_dict(run.scheduler)
        self.scaler.load_state_dict(run.scaler)
        self.epoch, self.iteration, self.step = run.epoch, run.iteration, run.step
        self.best = dict(run.best, metric=self.cfg.train.metric)
        rngs = run.rng
        set_rng_state(rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0])


class Window:
    """Loss terms averaged since the last log record, and the iteration time as the median of
    the last :attr:`SPAN` iterations: a momentary stall (an epoch's data workers starting, a
    checkpoint, another job) moves neither the images per second nor the ETA."""

    SPAN = 25

    def __init__(self) -> None:
        self.reset()
        self.last: dict[str, float] = {}
        self.times: deque[float] = deque(maxlen=self.SPAN)
        self.images_per_iter = 0

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float], images: int, seconds: float) -> None:
        for k, v in values.items():
            self.sums[k] += v
        self.last, self.count, self.images_per_iter = values, self.count + 1, images
        self.times.append(seconds)

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}

    def seconds_per_iter(self) -> float:
        return statistics.median(self.times) if self.times else 0.0

    def img_per_s(self) -> float:
        seconds = self.seconds_per_iter()
        return self.images_per_iter / seconds if seconds else 0.0


def check_metric_family(cfg: Config) -> None:
    """``train.metric`` must name a scalar metric the dataset's format is scored with (before training)."""
    check_metric(cfg.train.metric, "voc" if cfg.data.format == "synth" else cfg.data.format)


# What a resumed run can honour when it differs from the checkpoint's config; anything else
# (the model, the data, the batch size, the optimizer and its lr, the seed, the terms) is refused.
RESUME_APPLIES = {
    "train.epochs": "the schedule is recomputed over the new length", "train.threads": "",
    "train.eval_every": "", "train.log_every": "", "train.checkpoint_every": "",
    "train.metric": "best.pt is tracked afresh from the next evaluation",
    "data.num_workers": "", "device": "", "output_dir": "",
}


def saved_config(run: SavedRun) -> dict[str, Any]:
    """A checkpoint's config with the defaults of keys it predates filled in (a key added to detkd
    after the run started is not a change)."""
    raw = run.config or {}
    try:
        return dataclasses.asdict(saved_run_config(raw, run.path))
    except DetkdError:
        return raw


def check_resume_config(path: str, saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys a resume changes that it can honour (logged); a change it cannot honour is a
    :class:`DetkdError` naming every such key with both values."""
    changed = config_changes(saved, current)
    refused = [k for k in changed if k not in RESUME_APPLIES]
    if refused:
        pairs = "; ".join(f"{k}: {_at(saved, k)!r} in the checkpoint, {_at(current, k)!r} now" for k in refused)
        raise DetkdError(f"{path}: --resume cannot honour a changed {', '.join(refused)} ({pairs}); set them back, "
                         "or start a new run in another output_dir")
    for key in changed:
        note = RESUME_APPLIES[key]
        log.info("--resume: %s changed (%r -> %r), applied%s", key, _at(saved, key), _at(current, key),
                 f": {note}" if note else "")
    return changed


def _at(tree: dict[str, Any], dotted: str) -> Any:
    value: Any = tree
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    keys = sorted(set(saved) | set(current))
    out = []
    for k in keys:
        a, b = saved.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A target with its tensors on ``device`` (non-tensor fields, e.g. ``image_id``, kept)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def format_eta(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"
