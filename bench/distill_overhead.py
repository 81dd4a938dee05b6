"""What a distillation step costs against its parts, measured side by side in one run.

    python bench/distill_overhead.py --pair synth
    python bench/distill_overhead.py --pair r50-r18

overhead_ratio = time of a distillation step / (time of a plain student training step + time of
the teacher's forward on the same batch); memory_ratio = the same with peak memory. A plain
student step is ``student(images, targets)``, backward and an optimizer step; the teacher's
forward is ``teacher(images)`` in eval mode without grad; the distillation step is
``DistillTask.step`` with every term of the paper on, backward and an optimizer step.

Pairs (untrained weights, which is fine for timing): ``synth``, the embedded-dataset pair of
``configs/synth/distill_small.yaml`` (``small`` teacher, ``tiny`` student, 320 px); ``r50-r18``,
a ResNet-50-FPN teacher and a ResNet-18-FPN student at 512 px (FPN 256, box head 1024).
Times are medians over interleaved rounds; peak memory is measured in a fresh process per
variant, after a small warm-up call (lazy initialisation): resident-set growth on CPU, ``max_memory_allocated`` on CUDA. Prints a table, then one
line ``overhead_ratio=<x> memory_ratio=<y>``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from detkd.config import DistillConfig, load_config, config_to_dict, save_config
from detkd.data.synth import SYNTH_CLASSES
from detkd.distill.build import build_distill_task
from detkd.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = len(SYNTH_CLASSES) + 1
BIG = ["model.preset=null", "model.norm=gn", "model.trainable_layers=5", "model.min_size=512", "model.max_size=853"]
PAIRS = {  # (teacher overrides, student overrides, image size)
    "synth": ([], [], 320),
    "r50-r18": ([*BIG, "model.backbone=resnet50"], [*BIG, "model.backbone=resnet18"], 512),
}
VARIANTS = ("student_step", "teacher_forward", "distill_step")


def make_batch(size: int, batch: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """Random ``size`` x ``size`` images with 6 boxes each."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        wh = torch.empty(6, 2).uniform_(size / 16, size / 3, generator=g)
        xy = torch.rand(6, 2, generator=g) * (size - wh)
        images.append(torch.rand(3, size, size, generator=g))
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, NUM_CLASSES, (6,), generator=g)})
    return images, targets


def on_device(batch: tuple[list[torch.Tensor], list[dict]], device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = batch
    return [im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets]


def build_task(pair: str, folder: str):
    """The pair's distillation task; its (untrained) teacher is saved to ``folder`` first."""
    teacher_over, student_over, _ = PAIRS[pair]
    teacher_cfg = load_config(os.path.join(REPO, "configs/synth/teacher.yaml"), teacher_over)
    teacher_yaml, checkpoint = os.path.join(folder, "teacher.yaml"), os.path.join(folder, "teacher.pt")
    save_config(teacher_cfg, teacher_yaml)
    torch.manual_seed(0)
    model = build_model(teacher_cfg.model, NUM_CLASSES)
    torch.save({"model": model.state_dict(), "config": config_to_dict(teacher_cfg), "classes": list(SYNTH_CLASSES)}, checkpoint)
    cfg = load_config(os.path.join(REPO, "configs/synth/distill_small.yaml"),
                      [*student_over, f"teacher.config={teacher_yaml}", f"teacher.checkpoint={checkpoint}"],
                      schema=DistillConfig)
    return build_distill_task(cfg, NUM_CLASSES)


def step_functions(task, images, targets, device) -> dict[str, Callable[[], None]]:
    """One callable per variant, on the same batch."""
    student = task.module.student
    plain_opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    distill_opt = torch.optim.SGD([p for p in task.module.parameters() if p.requires_grad], lr=1e-5)

    def student_step() -> None:
        losses = student(images, targets)
        plain_opt.zero_grad()
        sum(losses.values()).backward()
        plain_opt.step()

    def teacher_forward() -> None:
        with torch.no_grad():
            task.teacher(images)

    def distill_step() -> None:
        losses = task.step(task.module, images, targets)
        distill_opt.zero_grad()
        sum(task.loss_weights.get(k, 1.0) * v for k, v in losses.items()).backward()
        distill_opt.step()

    task.module.train()
    task.teacher.to(device)
    return {"student_step": student_step, "teacher_forward": teacher_forward, "distill_step": distill_step}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(fns: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each variant, interleaved round by round after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in samples.items()}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(pair: str, variant: str, batch: int, device: str, queue: mp.Queue) -> None:
    """In a fresh process: the peak memory (MB) one call of ``variant`` adds (sent to ``queue``)."""
    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as folder:
        task = build_task(pair, folder)
        task.module.to(dev)
        step_functions(task, *on_device(make_batch(64, 1), dev), dev)[variant]()  # lazy inits, small
        fn = step_functions(task, *on_device(make_batch(PAIRS[pair][2], batch), dev), dev)[variant]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            fn()
            queue.put((torch.cuda.max_memory_allocated(dev) - base) / 2**20)
        else:
            base = rss_mb()
            fn()
            queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)


def measure_memory(pair: str, batch: int, device: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out = {}
    for variant in VARIANTS:
        queue = ctx.Queue()
        proc = ctx.Process(target=peak_memory, args=(pair, variant, batch, device, queue))
        proc.start()
        out[variant] = queue.get()
        proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="synth")
    parser.add_argument("--batch", type=int, default=2, help="images a step (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        task = build_task(args.pair, folder)
        task.module.to(device)
        images, targets = on_device(make_batch(PAIRS[args.pair][2], args.batch), device)
        times = time_variants(step_functions(task, images, targets, device), args.rounds, device)
    memory = measure_memory(args.pair, args.batch, args.device)
    print(f"pair {args.pair}, batch {args.batch}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'variant':<16} {'ms':>9} {'peak MB':>9}")
    for name in VARIANTS:
        print(f"{name:<16} {times[name] * 1000:9.1f} {memory[name]:9.1f}")
    overhead = times["distill_step"] / (times["student_step"] + times["teacher_forward"])
    mem = memory["distill_step"] / (memory["student_step"] + memory["teacher_forward"])
    print(f"overhead_ratio={overhead:.3f} memory_ratio={mem:.3f}")


if __name__ == "__main__":
    main()
