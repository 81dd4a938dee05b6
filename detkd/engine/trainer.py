"""The training loop, as a sequence of named steps (detectron2-style, without the machinery).

:func:`train` is what ``detkd train`` runs::

    trainer = Trainer(cfg, info)
    trainer.prepare_run_dir(resume)   # refuse to overwrite a run; save config.yaml
    trainer.build()                   # data, task (model), DDP, optimizer, schedule, AMP scaler
    trainer.maybe_resume(resume)      # last.pt: weights, optimizer, epoch/iteration, RNG
    trainer.fit()                     # per epoch: train_one_epoch, evaluate, checkpoint

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` (end of every epoch,
and every ``train.checkpoint_every`` iterations), ``best.pt`` (best ``train.metric``),
``metrics.jsonl`` and ``results.json`` (the COCO results of the latest evaluation).

Repeatability: the model is initialised from ``seed``; the data order depends only on
``(seed, epoch)``; checkpoints hold every RNG state. On CPU with ``data.num_workers=0`` a run
resumed from any checkpoint ends with bit-identical weights to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from detkd.config import Config
from detkd.engine import data as D
from detkd.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from detkd.engine.distributed import DistInfo, all_gather_objects, all_reduce_mean, cleanup_distributed, init_distributed
from detkd.engine.inference import evaluate_model, metric_value
from detkd.engine.logger import MetricLogger
from detkd.engine.schedule import build_optimizer, build_scheduler
from detkd.engine.task import TaskBuilder, TrainTask, build_detector_task, weighted_total
from detkd.errors import DetkdError
from detkd.models.presets import resolve_model_config

log = logging.getLogger("detkd")

Hook = Callable[["Trainer"], None]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, resume: bool = False, task_builder: TaskBuilder = build_detector_task,
          hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train ``cfg`` (under ``torchrun`` when its variables are set); -> the run's summary.

    ``task_builder(cfg, num_classes)`` makes what is trained (the detector by default; the
    distillation task plugs in here). ``hooks`` are called after every iteration.
    """
    info = init_distributed(cfg.device)
    if not info.is_main:
        log.setLevel(logging.WARNING)
    try:
        trainer = Trainer(cfg, info, task_builder, hooks)
        trainer.prepare_run_dir(resume)
        trainer.build()
        trainer.maybe_resume(resume)
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

    # -- the steps ---------------------------------------------------------------------------

    def prepare_run_dir(self, resume: bool) -> None:
        """Refuse to overwrite a run without ``--resume``; write the resolved ``config.yaml``."""
        check_metric_family(self.cfg)
        if os.path.exists(self.last_path) and not resume:
            raise DetkdError(
                f"{self.run_dir}: already holds a run (last.pt); pass --resume to continue it, "
                f"or choose another output_dir=..."
            )
        if self.info.is_main:
            from detkd.config import save_config

            os.makedirs(self.run_dir, exist_ok=True)
            save_config(self.cfg, os.path.join(self.run_dir, "config.yaml"))
            self.logger = MetricLogger(self.run_dir, enabled=True)

    def build(self) -> None:
        """Data, the task and its model, DDP, optimizer, schedule and AMP scaler."""
        cfg, info = self.cfg, self.info
        seed_everything(cfg.seed)
        self.train_set = D.build_train_dataset(cfg.data, cfg.seed)
        self.classes = tuple(self.train_set.classes)
        self.eval_set = D.build_eval_dataset(cfg.data, classes=D.eval_classes(cfg.data, self.classes))
        self.task: TrainTask = self.task_builder(cfg, len(self.classes) + 1)
        self.task.module.to(info.device)
        self.model = self.task.module
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            unused = getattr(self.task, "find_unused_parameters", False)
            self.model = DistributedDataParallel(self.task.module, device_ids=ids, find_unused_parameters=unused)
        seed_everything(cfg.seed + info.rank)  # ranks draw different RPN/RoI samples
        self.train_loader = D.build_train_loader(self.train_set, cfg.train.batch_size, cfg.data.num_workers, cfg.seed, info)
        self.eval_loader = D.build_eval_loader(self.eval_set, cfg.data.num_workers, info)
        self.iters_per_epoch = D.iters_per_epoch(self.train_loader)
        self.optimizer = build_optimizer(self.task.module, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp)
        if cfg.train.amp and not self.amp:
            log.info("train.amp: mixed precision needs CUDA; training in float32 on %s", info.device)
        log.info("training on %d images (%d classes), %d iterations an epoch, device %s",
                 len(self.train_set), len(self.classes), self.iters_per_epoch, info.device)

    def maybe_resume(self, resume: bool) -> None:
        """With ``--resume`` and a ``last.pt``: restore everything and continue where it stopped."""
        if not resume:
            return
        if not os.path.exists(self.last_path):
            log.info("--resume: no last.pt in %s, starting a new run", self.run_dir)
            return
        state = load_checkpoint(self.last_path, map_location=self.info.device)
        changed = config_changes(state.get("config", {}), dataclasses.asdict(self.cfg))
        if changed:
            log.warning("--resume: the config differs from the checkpoint's in %s", ", ".join(changed))
        self.load_state(state)
        self.logger.truncate_after(self.step)
        log.info("resumed %s at epoch %d, iteration %d (step %d)", self.last_path, self.epoch + 1,
                 self.iteration, self.step)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; evaluate every ``eval_every`` epochs and after the last."""
        epochs = self.cfg.train.epochs
        try:
            while self.epoch < epochs:
                self.train_one_epoch()
                self.epoch, self.iteration = self.epoch + 1, 0
                if self.due_for_evaluation():
                    self.evaluate()
                self.checkpoint(end_of_epoch=True)
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
        window = Window()
        tick = time.perf_counter()
        for images, targets in self.train_loader:
            losses = self.train_step(images, targets)
            self.iteration, self.step = self.iteration + 1, self.step + 1
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
        ann = D.eval_ann_file(self.cfg.data)
        results = os.path.join(self.run_dir, "results.json") if self.info.is_main else None
        self.metrics = evaluate_model(self.task.detector, self.eval_loader, self.eval_set.index, self.info,
                                      results_path=results, ann_file=ann)
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
        """``last.pt`` (and ``best.pt`` after an evaluation that improved ``train.metric``), rank 0 only."""
        state = self.state_dict()  # every rank: gathers the RNG states
        if self.info.is_main:
            save_checkpoint(self.last_path, state)
            if end_of_epoch and self.is_best:
                save_checkpoint(os.path.join(self.run_dir, "best.pt"), state)
        self.is_best = False

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
        """A checkpoint (see :mod:`detkd.engine.checkpoint`); the RNG states of every rank."""
        state = {
            "model": self.task.detector.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "iteration": self.iteration, "step": self.step,
            "best": dict(self.best),
            "rng": all_gather_objects(rng_state(), self.info),
            "classes": list(self.classes),
            "config": dataclasses.asdict(self.cfg),
        }
        if self.task.module is not self.task.detector:
            state["module"] = self.task.module.state_dict()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (this rank's RNG state, or rank 0's)."""
        try:
            if "module" in state:
                self.task.module.load_state_dict(state["module"])
            else:
                self.task.detector.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise DetkdError(f"{self.last_path}: does not fit this config's model ({str(e).splitlines()[0]})") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iteration, self.step = state["epoch"], state["iteration"], state["step"]
        self.best = dict(state["best"], metric=self.cfg.train.metric)
        rngs = state["rng"]
        set_rng_state(rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0])


class Window:
    """Loss terms averaged since the last log record, and a smoothed iteration time."""

    def __init__(self) -> None:
        self.reset()
        self.last: dict[str, float] = {}
        self.sec_per_iter: float | None = None  # exponential moving average
        self.images_per_iter = 0

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float], images: int, seconds: float) -> None:
        for k, v in values.items():
            self.sums[k] += v
        self.last, self.count, self.images_per_iter = values, self.count + 1, images
        ema = self.sec_per_iter
        self.sec_per_iter = seconds if ema is None else 0.9 * ema + 0.1 * seconds

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}

    def img_per_s(self) -> float:
        return self.images_per_iter / self.sec_per_iter if self.sec_per_iter else 0.0

    def seconds_per_iter(self) -> float:
        return self.sec_per_iter or 0.0


def check_metric_family(cfg: Config) -> None:
    """``train.metric`` must name a family the dataset's format is scored with (before training)."""
    from detkd.evaluation.build import families_for

    family = cfg.train.metric.partition(".")[0]
    families = families_for("voc" if cfg.data.format == "synth" else cfg.data.format)
    if family not in families or "." not in cfg.train.metric:
        raise DetkdError(f"train.metric: {cfg.train.metric!r} is not family.key with a family of "
                         f"{cfg.data.format} data ({', '.join(families)}), e.g. voc.mAP or coco.AP")


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
