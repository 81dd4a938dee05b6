"""Latency, throughput and peak memory of a detector's eval forward on one device.

What is measured, on a deterministic random input of a fixed raw size (default 480x640, VOC-like
3:4) that the model's own ``GeneralizedRCNNTransform`` resizes to its ``min_size``/``max_size``:

- **latency** at batch 1: ``warmup`` untimed forwards, then ``runs`` timed ones; the median
  and the 90th percentile (linear interpolation) in milliseconds. Throughput at batch 1 is
  ``1000 / median``. Several models are timed in *interleaved rounds*
  (:func:`interleaved_latency`): each round runs every model about ``runs`` times, visiting the
  models in an order rotated from round to round and then in its reverse (A B B A), so that a
  drift of a shared machine (another job starting, the clock throttling) lands on every model
  alike, across rounds and within each; a model's latency is the median over rounds of its
  per-round median, its spread the interquartile range over rounds, and a speed-up is the median
  over rounds of the per-round ratio (:func:`round_ratios`), in which the drift cancels;
- **throughput** at batch 8: ``batch_runs`` timed forwards of 8 different images each (after the
  batch-1 warm-up; on CUDA one more untimed batch-8 forward), ``8 / median seconds``;
- **peak memory** of a batch-1 forward, in MB (2^20 bytes). On CUDA: ``max_memory_allocated``
  after ``reset_peak_memory_stats`` -- tensors only, the weights included, the caching
  allocator's reserve not. On CPU: the peak resident set size of the *whole process* (``VmHWM``
  of ``/proc/self/status`` after resetting it by writing ``5`` to ``/proc/self/clear_refs``),
  so the Python interpreter, torch's libraries and anything else alive in the process count
  too; None where that is not available (not Linux).

Every forward runs in ``eval()`` mode under ``torch.inference_mode()``; on CUDA each timed region
is bracketed by ``torch.cuda.synchronize()`` and may run under autocast (fp16 or bf16).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from detkd.bench.hold import hold_counts
from detkd.errors import DetkdError

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_INPUT = (480, 640)  # raw (height, width) fed to the model, VOC-like 3:4
BATCH = 8  # images per batch of the throughput measurement
MB = 2**20


@dataclass
class SpeedResult:
    """The numbers of :func:`measure_speed` (milliseconds, images per second, MB)."""

    latency_ms: float
    latency_ms_p90: float
    img_per_s_b1: float
    img_per_s_b8: float | None
    peak_mem_mb: float | None
    input_hw: str  # the resized input, "HxW"


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device on a machine without one is a DetkdError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DetkdError(f"--device: unknown device {name!r} (cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise DetkdError(f"--device: {name!r} is not supported (cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DetkdError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def check_amp(amp: str | None, device: torch.device) -> None:
    """``amp`` must be None, fp16 or bf16, and autocast applies to CUDA only."""
    if amp is None:
        return
    if amp not in AMP_DTYPES:
        raise DetkdError(f"--amp: {amp!r} is not fp16 or bf16")
    if device.type != "cuda":
        raise DetkdError(f"--amp {amp}: mixed precision is measured on CUDA only (got --device {device}); "
                         "leave out --amp on CPU")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """torch's CPU threads set to ``threads`` within the block (None: torch's default, unchanged),
    restored after; yields the count in use."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise DetkdError(f"--threads: must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def make_images(count: int, hw: tuple[int, int] = DEFAULT_INPUT, seed: int = 0,
                device: torch.device | str = "cpu") -> list[Tensor]:
    """``count`` deterministic random images ``[3, H, W]`` in [0, 1] (the same for every model)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *hw, generator=gen).to(device) for _ in range(count)]


def resized_hw(model: nn.Module, image: Tensor) -> str:
    """The size ``model.transform`` resizes ``image`` to (before padding), as ``"HxW"``."""
    with torch.inference_mode():
        image_list, _ = model.transform([image])
    h, w = image_list.image_sizes[0]
    return f"{h}x{w}"


@contextmanager
def forward_context(model: nn.Module, device: torch.device, amp: str | None = None,
                    hold: bool = False) -> Iterator[None]:
    """Eval mode, ``inference_mode``, autocast when ``amp`` and held counts when ``hold``."""
    check_amp(amp, device)
    model.eval()
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(hold_counts(model) if hold else nullcontext())
        if amp is not None:
            stack.enter_context(torch.autocast(device_type="cuda", dtype=AMP_DTYPES[amp]))
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median_p90_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """Median and 90th percentile (linear interpolation, so p90 >= median) in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return float(np.median(ms)), float(np.percentile(ms, 90))


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``; else nothing),
    so a CPU peak-RSS reading is less inflated by models measured before."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def read_vm_hwm_mb() -> float | None:
    """The process's peak resident set size (``VmHWM``) in MB, or None where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_peak_rss_mb(fn: Callable[[], object]) -> float | None:
    """Peak RSS of the process (MB) while ``fn`` runs; None off Linux (no ``/proc/self/clear_refs``)."""
    release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    fn()
    return read_vm_hwm_mb()


def cuda_peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """``max_memory_allocated`` (MB) of ``fn``, weights and every live tensor included."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / MB


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """The peak memory of ``fn`` on ``device`` (see the module docstring for what counts)."""
    return cuda_peak_mb(fn, device) if device.type == "cuda" else cpu_peak_rss_mb(fn)


@dataclass
class RoundTimes:
    """One model's interleaved timings: ``rounds`` the median ms of each round, ``forwards`` every
    timed forward's ms."""

    rounds: list[float]
    forwards: list[float]

    def latency(self) -> tuple[float, float, float]:
        """``(median over rounds, interquartile range over rounds, p90 over every forward)`` in ms."""
        q25, median, q75 = quartiles(self.rounds)
        return median, q75 - q25, float(np.percentile(self.forwards, 90))


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """The 25th, 50th and 75th percentiles (linear interpolation)."""
    q25, q50, q75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q25), float(q50), float(q75)


def rotation(count: int, round_index: int) -> list[int]:
    """The order of the models in round ``round_index``: ``r, r+1, ..., r-1`` (mod ``count``)."""
    return [(round_index + k) % count for k in range(count)]


def interleaved_latency(models: Sequence[tuple[nn.Module, bool]], device: torch.device, rounds: int = 7,
                        runs: int = 3, warmup: int = 2, input_hw: tuple[int, int] = DEFAULT_INPUT,
                        amp: str | None = None, progress: Callable[[str], None] | None = None) -> list[RoundTimes]:
    """Batch-1 latency of several models in interleaved rounds (see the module docstring).

    ``models``: ``(model, hold)`` pairs, each already on ``device``; every model gets ``warmup``
    untimed forwards first, then ``rounds`` rounds. A round visits the models in a rotated order
    and then in the reverse order (A B B A), ``ceil(runs / 2)`` timed forwards per visit, so that a
    drift within the round lands on every model alike (a single model: ``runs`` forwards).
    """
    if rounds < 1 or runs < 1 or warmup < 0:
        raise DetkdError(f"--rounds and --runs must be at least 1, --warmup at least 0 (got {rounds}, {runs}, {warmup})")
    one = make_images(1, input_hw, device=device)
    for model, hold in models:
        with forward_context(model, device, amp, hold):
            for _ in range(warmup):
                model(one)
    times = [RoundTimes([], []) for _ in models]
    per_visit = (runs + 1) // 2 if len(models) > 1 else runs
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1}/{rounds}")
        order = rotation(len(models), r)
        round_ms: list[list[float]] = [[] for _ in models]
        for i in order + order[::-1] if len(models) > 1 else order:
            model, hold = models[i]
            with forward_context(model, device, amp, hold):
                round_ms[i].extend(1000.0 * timed(lambda: model(one), device) for _ in range(per_visit))
        for i, ms in enumerate(round_ms):
            times[i].rounds.append(statistics.median(ms))
            times[i].forwards.extend(ms)
    return times


def round_ratios(reference: RoundTimes, other: RoundTimes) -> tuple[float, float]:
    """The speed-up of ``other`` over ``reference``: the median over rounds of the per-round ratio
    of their latencies, and its interquartile range."""
    ratios = [a / b for a, b in zip(reference.rounds, other.rounds) if b > 0]
    q25, median, q75 = quartiles(ratios)
    return median, q75 - q25


def measure_throughput(model: nn.Module, device: torch.device, batch_runs: int, input_hw: tuple[int, int] = DEFAULT_INPUT,
                       amp: str | None = None, hold: bool = False) -> tuple[float | None, float | None, str]:
    """``(img/s at batch 8, peak MB of a batch-1 forward, resized input "HxW")`` (module docstring);
    the batch-8 figure is None for ``batch_runs = 0``."""
    images = make_images(BATCH, input_hw, device=device)
    one = images[:1]
    with forward_context(model, device, amp, hold):
        model(one)  # warm
        if batch_runs and device.type == "cuda":
            model(images)
        batch_seconds = [timed(lambda: model(images), device) for _ in range(batch_runs)]
        peak = peak_memory_mb(lambda: model(one), device)
    b8 = BATCH / statistics.median(batch_seconds) if batch_seconds else None
    return b8, peak, resized_hw(model, images[0])


def measure_speed(model: nn.Module, device: torch.device, runs: int = 10, warmup: int = 2,
                  batch_runs: int | None = None, input_hw: tuple[int, int] = DEFAULT_INPUT,
                  amp: str | None = None, hold: bool = False,
                  progress: Callable[[str], None] | None = None) -> SpeedResult:
    """Latency, throughput and peak memory of one model (already on ``device``), timed alone:
    ``runs`` forwards after ``warmup`` (see the module docstring; several models are compared
    with :func:`interleaved_latency`). ``batch_runs``: timed batches of 8 (None: ``max(2, runs //
    4)``, 0: skip, None in the result); ``hold``: measure under :func:`~detkd.bench.hold.hold_counts`."""
    if runs < 1 or warmup < 0:
        raise DetkdError(f"--runs must be at least 1 and --warmup at least 0 (got {runs}, {warmup})")
    batch_runs = max(2, runs // 4) if batch_runs is None else batch_runs
    note = progress or (lambda _: None)
    note(f"batch 1 ({warmup} warm-up, {runs} runs)")
    times = interleaved_latency([(model, hold)], device, rounds=1, runs=runs, warmup=warmup, input_hw=input_hw, amp=amp)[0]
    note(f"batch {BATCH} ({batch_runs} runs)")
    b8, peak, hw = measure_throughput(model, device, batch_runs, input_hw, amp, hold)
    median, p90 = median_p90_ms([ms / 1000.0 for ms in times.forwards])
    return SpeedResult(median, p90, 1000.0 / median, b8, peak, hw)
