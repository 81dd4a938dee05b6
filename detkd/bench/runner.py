"""Benchmark models from configs: build each one, measure it, make its :class:`BenchRow`.

- **Weights**: without a checkpoint a model is untrained: ``model.checkpoint``, ``model.weights``
  and ``model.weights_backbone`` of its config are cleared before building, so nothing is read or
  downloaded (pretrained weights do not change the speed). With a checkpoint, its detector
  weights are loaded with detkd's checked loader (a mismatch is an error naming the file).
- **Counts**: untrained models are measured with held counts (:mod:`detkd.bench.hold`), trained
  ones with their own; ``hold=True`` / ``False`` forces either.
- **Classes** (only the predictor's size depends on them, which hardly changes the speed): the
  checkpoint's predictor when there is one, else ``data.classes`` of the config, VOC's 20 for
  ``format: voc``, the embedded dataset's 9 for ``format: synth``, and 20 otherwise (logged).
- **Sizes**: a sweep sets ``min_size = size`` and ``max_size = round(size * max_size / min_size)``
  of the config's (preset-resolved) model.
- **Distillation configs** (a ``teacher:`` section) give two models: the teacher
  (``teacher.config``, with ``teacher.checkpoint`` when that file exists) and the student; the
  teacher is the speed-up reference of its student. Other rows are relative to the first row.
- **Timing**: each model is first measured alone for FLOPs, batch-8 throughput, peak memory
  and its stage profile (built, measured, freed: one model in memory at a time); then every
  model is built again and all are timed together in interleaved rounds
  (:func:`~detkd.bench.measure.interleaved_latency`), so that latencies and speed-ups of one
  run compare like with like on a shared machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN

from detkd.bench.flops import count_flops
from detkd.bench.hold import hold_counts
from detkd.bench.measure import (
    DEFAULT_INPUT,
    RoundTimes,
    SpeedResult,
    check_amp,
    interleaved_latency,
    make_images,
    measure_speed,
    measure_throughput,
    resolve_device,
    round_ratios,
    torch_threads,
)
from detkd.bench.profile import StageProfile, profile_model
from detkd.bench.report import CHECKPOINT, HELD, UNTRAINED, BenchRow, read_accuracy
from detkd.config import DataSection, DistillConfig, ModelSection, load_any_config, load_config
from detkd.config.files import find_config
from detkd.config.presets import resolve_model_config
from detkd.data.from_config import declared_classes
from detkd.errors import DetkdError
from detkd.models import build_model
from detkd.models.weights import load_state_checked
from detkd.utils.checkpoint import read_checkpoint

log = logging.getLogger("detkd")

DEFAULT_OBJECT_CLASSES = 20  # when neither a checkpoint nor the data section says
PREDICTOR_KEY = "roi_heads.box_predictor.cls_score.weight"
PRETRAINED_KEYS = ("checkpoint", "weights", "weights_backbone")


@dataclass
class BenchOptions:
    """How to measure (see :func:`~detkd.bench.measure.measure_speed`); ``hold`` None: automatic."""

    device: str = "cpu"
    threads: int | None = None
    runs: int = 3  # timed forwards of each model a round (alone: in all)
    rounds: int = 7  # interleaved rounds
    warmup: int = 2
    batch_runs: int | None = None
    input_hw: tuple[int, int] = DEFAULT_INPUT
    amp: str | None = None
    hold: bool | None = None
    profile: bool = False


@dataclass
class BenchTarget:
    """One model to measure: its config's model section, class count and weights."""

    name: str
    config: str
    model: ModelSection
    num_classes: int
    checkpoint: str | None = None
    results: str | None = None
    teacher_of: str | None = None  # set on a distillation config's teacher: the student's name


@dataclass
class BenchReport:
    """The rows (speed-ups filled in) and, with ``profile``, one stage profile a row."""

    rows: list[BenchRow] = field(default_factory=list)
    profiles: list[StageProfile] = field(default_factory=list)


def sized(model_cfg: ModelSection, size: int | None) -> ModelSection:
    """The preset-resolved model section, pretrained sources cleared, at ``min_size = size``."""
    cfg = resolve_model_config(model_cfg)
    for key in PRETRAINED_KEYS:
        setattr(cfg, key, None)
    if size is not None:
        if size < 1:
            raise DetkdError(f"--sizes: a size must be a positive number of pixels, got {size}")
        cfg.max_size = max(size, round(size * cfg.max_size / cfg.min_size))
        cfg.min_size = size
    return cfg


def classes_from_data(data: DataSection, source: str) -> int:
    """K + 1 for a config's data section (see the module docstring)."""
    classes = declared_classes(data)
    if classes is not None:
        return len(classes) + 1
    log.info("%s: data.classes not set for format %s: %d object classes assumed (only the predictor's "
             "size depends on it)", source, data.format, DEFAULT_OBJECT_CLASSES)
    return DEFAULT_OBJECT_CLASSES + 1


def read_weights(path: str) -> tuple[dict[str, Tensor], int]:
    """A checkpoint's detector weights and its K + 1 (from the predictor's shape)."""
    weights = read_checkpoint(path).weights
    if PREDICTOR_KEY not in weights:
        raise DetkdError(f"{path}: no {PREDICTOR_KEY} in the weights: not a Faster R-CNN checkpoint")
    return weights, int(weights[PREDICTOR_KEY].shape[0])


class _DropUntrainedNormWarning(logging.Filter):
    """build_model's advice to train frozen-BN models from pretrained weights is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("model.norm frozen_bn without pretrained weights")


def build_bench_model(model_cfg: ModelSection, num_classes: int | None,
                      checkpoint: str | None = None) -> tuple[FasterRCNN, int]:
    """The model (untrained, or with the checkpoint's weights) and its K + 1 (the checkpoint's
    when there is one; ``num_classes`` may then be None)."""
    weights = None
    if checkpoint is not None:
        weights, num_classes = read_weights(checkpoint)
    if num_classes is None:
        raise ValueError("num_classes is needed without a checkpoint")
    quiet = _DropUntrainedNormWarning()
    log.addFilter(quiet)
    try:
        model = build_model(model_cfg, num_classes)
    finally:
        log.removeFilter(quiet)
    if weights is not None:
        load_state_checked(model, weights, checkpoint, "checkpoint")
    return model, num_classes


def held_flops_per_image(model: FasterRCNN, device: torch.device, input_hw: tuple[int, int], hold: bool) -> int:
    """FLOPs of a batch-1 forward on the benchmark image (counts held when ``hold``)."""
    images = make_images(1, input_hw, device=device)
    if not hold:
        return count_flops(model, images)
    with hold_counts(model):
        return count_flops(model, images)


def bench_model(model_cfg: ModelSection, num_classes: int | None, name: str, checkpoint: str | None = None,
                options: BenchOptions | None = None, config: str = "", size: int | None = None,
                label: str = "") -> BenchRow:
    """Build, measure and describe one model, timed alone (see the module docstring); ``size``:
    the sweep's min_size (None: the config's). The stage profile comes from :func:`measure_model`."""
    return measure_model(model_cfg, num_classes, name, checkpoint, options, config, size, label)[0]


def measure_model(model_cfg: ModelSection, num_classes: int | None, name: str, checkpoint: str | None = None,
                  options: BenchOptions | None = None, config: str = "", size: int | None = None,
                  label: str = "", timed: bool = True) -> tuple[BenchRow, StageProfile | None]:
    """:func:`bench_model` and, with ``options.profile``, the model's stage profile. ``timed``
    False leaves the latency fields NaN, for :func:`time_interleaved` to fill."""
    opts = options or BenchOptions()
    device = resolve_device(opts.device)
    cfg = sized(model_cfg, size)
    tag = f"{label} {name} @{cfg.min_size}".strip()
    log.info("%s: building%s", tag, f" with {checkpoint}" if checkpoint else " (untrained)")
    model, num_classes = build_bench_model(cfg, num_classes, checkpoint)
    hold = opts.hold if opts.hold is not None else checkpoint is None
    with torch_threads(opts.threads) as threads:
        speed, flops, profile = run_measurements(model.to(device), device, opts, hold, tag,
                                                 name if size is None else f"{name}@{cfg.min_size}", timed)
    mode = HELD if hold else (CHECKPOINT if checkpoint else UNTRAINED)
    row = BenchRow(
        name=name, config=config, checkpoint=checkpoint, mode=mode, device=str(device), threads=threads,
        amp=opts.amp, min_size=model.transform.min_size[0], max_size=model.transform.max_size,  # the built model's own
        raw_hw="x".join(map(str, opts.input_hw)), input_hw=speed.input_hw, num_classes=num_classes,
        params=sum(p.numel() for p in model.parameters()), gflops=flops / 1e9, latency_ms=speed.latency_ms,
        latency_ms_p90=speed.latency_ms_p90, img_per_s_b1=speed.img_per_s_b1, img_per_s_b8=speed.img_per_s_b8,
        peak_mem_mb=speed.peak_mem_mb, runs=opts.runs, warmup=opts.warmup, rounds=opts.rounds if not timed else 1,
    )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, profile


def run_measurements(model: FasterRCNN, device: torch.device, opts: BenchOptions, hold: bool, tag: str,
                     profile_name: str, timed: bool = True) -> tuple[SpeedResult, int, StageProfile | None]:
    """Speed (latency too when ``timed``), FLOPs per image and (with ``opts.profile``) the stage
    profile of a built model."""
    flops = held_flops_per_image(model, device, opts.input_hw, hold)
    if timed:
        speed = measure_speed(model, device, opts.runs, opts.warmup, opts.batch_runs, opts.input_hw, opts.amp, hold,
                              progress=lambda step: log.info("%s: %s", tag, step))
    else:
        log.info("%s: batch %d throughput and peak memory", tag, 8)
        batch_runs = max(2, (opts.runs * opts.rounds) // 4) if opts.batch_runs is None else opts.batch_runs
        b8, peak, hw = measure_throughput(model, device, batch_runs, opts.input_hw, opts.amp, hold)
        nan = float("nan")
        speed = SpeedResult(nan, nan, nan, b8, peak, hw)
    profile = None
    if opts.profile:
        log.info("%s: stage profile", tag)
        profile = profile_model(model, device, profile_name, opts.runs, 1, opts.input_hw, opts.amp, hold)
    return speed, flops, profile


def config_name(path: str) -> str:
    """``configs/voc/teacher_r50.yaml`` -> ``teacher_r50``."""
    return os.path.splitext(os.path.basename(path))[0]


def teacher_target(cfg: DistillConfig, path: str, student: str) -> BenchTarget:
    """The teacher of a distillation config: its own config's model, its checkpoint if the file exists."""
    teacher = cfg.teacher
    if not teacher.config:
        raise DetkdError(f"{path}: teacher.config is not set (the teacher's YAML config)")
    if not os.path.isfile(find_config(teacher.config)):
        raise DetkdError(f"{path}: teacher.config {teacher.config}: config file not found")
    teacher_cfg = load_config(teacher.config)
    checkpoint = teacher.checkpoint if teacher.checkpoint and os.path.isfile(teacher.checkpoint) else None
    if checkpoint is None:
        log.info("%s: teacher.checkpoint %s not found: the teacher is measured untrained", path,
                 teacher.checkpoint or "(not set)")
    num_classes = None if checkpoint else classes_from_data(cfg.data, path)
    return BenchTarget(config_name(teacher.config), teacher.config, teacher_cfg.model, num_classes, checkpoint,
                       teacher_of=student)


def targets_for_config(path: str, checkpoint: str | None = None, results: str | None = None) -> list[BenchTarget]:
    """The models of one config file: itself, or a distillation config's teacher and student."""
    if not os.path.isfile(find_config(path)):
        raise DetkdError(f"{path}: config file not found")
    name = config_name(path)
    cfg = load_any_config(path)
    classes = None if checkpoint else classes_from_data(cfg.data, path)
    target = BenchTarget(name, path, cfg.model, classes, checkpoint, results)
    if isinstance(cfg, DistillConfig):
        return [teacher_target(cfg, path, name), target]
    return [target]


def check_pairing(configs: Sequence[str], values: Sequence[str], option: str) -> None:
    """``--checkpoint``/``--results`` pair with the CONFIGs in order: no more of them than CONFIGs."""
    if len(values) > len(configs):
        raise DetkdError(f"{option}: {len(values)} given for {len(configs)} CONFIG(s); they pair with the "
                         "CONFIGs in order (give at most one per CONFIG)")


def check_options(opts: BenchOptions) -> None:
    """Option errors before anything is built: device, precision, counts of runs."""
    check_amp(opts.amp, resolve_device(opts.device))
    if opts.runs < 1 or opts.rounds < 1 or opts.warmup < 0 or (opts.batch_runs is not None and opts.batch_runs < 0):
        raise DetkdError(f"--runs and --rounds must be at least 1, --warmup and --batch-runs at least 0 (got "
                         f"{opts.runs}, {opts.rounds}, {opts.warmup}, {opts.batch_runs})")
    if opts.threads is not None and opts.threads < 1:
        raise DetkdError(f"--threads: must be at least 1, got {opts.threads}")
    if min(opts.input_hw) < 1:
        raise DetkdError(f"--input: sizes must be positive, got {opts.input_hw}")


def set_speedups(rows: list[BenchRow], references: list[int], times: Sequence[RoundTimes] | None = None) -> None:
    """Each row's speed-up over the row at its index in ``references``: the median over rounds of
    the per-round latency ratio, with its IQR (``times``: the interleaved timings, one a row);
    without timings, the ratio of the two latencies."""
    names = [r.name for r in rows]
    for i, (row, ref) in enumerate(zip(rows, references)):
        base = rows[ref]
        row.reference = base.name if names.count(base.name) == 1 else f"{base.name}@{base.min_size}"  # a sweep
        if times is not None:
            row.speedup, row.speedup_iqr = round_ratios(times[ref], times[i])
        else:
            row.speedup = base.latency_ms / row.latency_ms if row.latency_ms > 0 else None


@dataclass
class Entry:
    """One model of a benchmark at one size: what builds it (again) for the interleaved rounds."""

    target: BenchTarget
    size: int | None
    reference: int  # index of the entry its speed-up is relative to


def bench_entries(entries: Sequence[Entry], options: BenchOptions) -> BenchReport:
    """Measure every entry alone (FLOPs, throughput, memory, profile), then time all of them in
    interleaved rounds (:func:`time_interleaved`) and set the speed-ups."""
    report = BenchReport()
    for k, entry in enumerate(entries):
        t = entry.target
        row, profile = measure_model(t.model, t.num_classes, t.name, t.checkpoint, options, t.config, entry.size,
                                     f"[{k + 1}/{len(entries)}]", timed=False)
        report.rows.append(row)
        report.profiles += [profile] if profile is not None else []
    times = time_interleaved(entries, report.rows, options)
    set_speedups(report.rows, [e.reference for e in entries], times)
    return report


def time_interleaved(entries: Sequence[Entry], rows: list[BenchRow], options: BenchOptions) -> list[RoundTimes]:
    """Build every entry's model again, time them all in interleaved rounds and fill each row's
    latency fields; -> the timings (one a row)."""
    device = resolve_device(options.device)
    models = []
    for entry, row in zip(entries, rows):
        cfg = sized(entry.target.model, entry.size)
        model, _ = build_bench_model(cfg, row.num_classes if entry.target.checkpoint is None else None, entry.target.checkpoint)
        models.append((model.to(device), row.mode == HELD))
    log.info("timing %d model(s) in %d interleaved rounds of %d runs", len(models), options.rounds, options.runs)
    with torch_threads(options.threads):
        times = interleaved_latency(models, device, options.rounds, options.runs, options.warmup, options.input_hw,
                                    options.amp, progress=lambda step: log.info("latency: %s", step))
    for row, t in zip(rows, times):
        row.latency_ms, row.latency_ms_iqr, row.latency_ms_p90 = t.latency()
        row.img_per_s_b1 = 1000.0 / row.latency_ms
    del models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return times


def bench_configs(configs: Sequence[str], checkpoints: Sequence[str] = (), results: Sequence[str] = (),
                  sizes: Sequence[int] | None = None, options: BenchOptions | None = None) -> BenchReport:
    """Measure every model of ``configs`` at every size of ``sizes`` (None: each config's own).

    ``checkpoints`` and ``results`` (``detkd eval --json`` files) pair with ``configs`` in order;
    fewer than the configs leaves the rest untrained / without accuracy. Every file is checked
    before the first measurement. Rows come config by config (a distillation config: teacher,
    then student), size by size within a model; latencies come from interleaved rounds of all.
    """
    opts = options or BenchOptions()
    check_options(opts)
    check_pairing(configs, checkpoints, "--checkpoint")
    check_pairing(configs, results, "--results")
    for path in checkpoints:
        if not os.path.isfile(path):
            raise DetkdError(f"{path}: checkpoint not found (--checkpoint)")
    accuracy = {path: read_accuracy(path) for path in results}
    groups = [targets_for_config(path, _nth(checkpoints, i), _nth(results, i)) for i, path in enumerate(configs)]
    size_list: list[int | None] = list(sizes) if sizes else [None]
    entries: list[Entry] = []
    for targets in groups:
        teacher_at = {}
        for target in targets:
            for s, size in enumerate(size_list):
                if target.teacher_of is not None:
                    teacher_at[s] = len(entries)
                entries.append(Entry(target, size, teacher_at.get(s, 0) if target.teacher_of is None else 0))
    report = bench_entries(entries, opts)
    for entry, row in zip(entries, report.rows):
        row.ap50, row.map = accuracy.get(entry.target.results, (None, None)) if entry.target.results else (None, None)
    return report


def _nth(values: Sequence[str], i: int) -> str | None:
    return values[i] if i < len(values) else None
