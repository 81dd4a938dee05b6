"""Latency, throughput and peak memory of a detector's eval forward on one device.

What is measured, on a deterministic random input of a fixed raw size (default 480x640, VOC-like
3:4) that the model's own ``GeneralizedRCNNTransform`` resizes to its ``min_size``/``max_size``:

- **latency** at batch 1: ``warmup`` untimed forwards, then ``runs`` timed ones; the median
  and the 90th percentile (linear interpolation) in milliseconds. Throughput at batch 1 is
  ``1000 / median``;
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


def measure_speed(model: nn.Module, device: torch.device, runs: int = 10, warmup: int = 2,
                  batch_runs: int | None = None, input_hw: tuple[int, int] = DEFAULT_INPUT,
                  amp: str | None = None, hold: bool = False,
                  progress: Callable[[str], None] | None = None) -> SpeedResult:
    """Latency, throughput and peak memory of ``model`` (already on ``device``); see the module
    docstring. ``batch_runs``: timed batches of 8 (None: ``max(2, runs // 4)``, 0: skip, None
    in the result); ``hold``: measure under :func:`~detkd.bench.hold.hold_counts`."""
    if runs < 1 or warmup < 0:
        raise DetkdError(f"--runs must be at least 1 and --warmup at least 0 (got {runs}, {warmup})")
    batch_runs = max(2, runs // 4) if batch_runs is None else batch_runs
    note = progress or (lambda _: None)
    images = make_images(BATCH, input_hw, device=device)
    one = images[:1]
    with forward_context(model, device, amp, hold):
        note(f"warm-up ({warmup})")
        for _ in range(warmup):
            model(one)
        note(f"batch 1 ({runs} runs)")
        seconds = [timed(lambda: model(one), device) for _ in range(runs)]
        note(f"batch {BATCH} ({batch_runs} runs)")
        if batch_runs and device.type == "cuda":
            model(images)
        batch_seconds = [timed(lambda: model(images), device) for _ in range(batch_runs)]
        peak = peak_memory_mb(lambda: model(one), device)
    median, p90 = median_p90_ms(seconds)
    b8 = BATCH / statistics.median(batch_seconds) if batch_seconds else None
    return SpeedResult(median, p90, 1000.0 / median, b8, peak, resized_hw(model, images[0]))
