"""Check detkd's CUDA code paths on the GPUs of this machine: one line per check, exit 1 on any failure.

    python tools/gpu_check.py [--only NAME[,NAME]] [--keep DIR]

On a machine without CUDA it says so and exits 0. Each check runs detkd as a user does (the
library, or the ``detkd`` command in a subprocess) on the embedded dataset at a toy size (12
generated images, one short epoch), with the configs of ``configs/synth`` and the teacher bundled
with detkd.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

CHECKS_HELP = """\
checks (in this order):
  amp_train_small     one AMP epoch (fp16 autocast, GradScaler) of student_small.yaml on CUDA: finite losses
  amp_train_lowres    the same for student_lowres.yaml (the teacher's architecture at half resolution)
  amp_distill_small   one AMP epoch of distill_small.yaml against the bundled teacher: finite losses
  amp_distill_lowres  the same for distill_lowres.yaml (student from the teacher's weights, PKD hints)
  cpu_cuda_forward    the bundled teacher's FPN maps and detections on CPU and on CUDA agree
  bench_fp16          detkd bench of teacher and both students on CUDA in fp16: latencies and speed-ups
  nccl_distill        with two GPUs or more: a 2-process torchrun distillation (NCCL backend)"""

TOY = ("data.synth.images=12", "data.synth.profile=easy", "data.num_workers=0", "train.epochs=1",
       "train.batch_size=2", "train.eval_every=0", "train.log_every=1", "train.amp=true", "device=cuda")
SIZES = {"small": ("model.min_size=128", "model.max_size=160"), "lowres": ("model.min_size=64", "model.max_size=80")}
FEATURE_RTOL = 1e-2  # max |CPU - CUDA| / max |CPU| of the FPN maps (TF32 convolutions on recent GPUs)


class CheckFailed(Exception):
    """A check's failure, with the one-line reason."""


def finite_losses(run_dir: Path) -> str:
    """The run's training losses, all finite: the last one in words; else :class:`CheckFailed`."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r.get("loss") for r in records if r.get("type") == "train"]
    if not losses or any(v is None or not math.isfinite(v) for v in losses):
        raise CheckFailed(f"training losses not all finite: {losses}")
    return f"{len(losses)} steps, last loss {losses[-1]:.3f}"


def train_check(config: str, kind: str, work: Path, distill: bool) -> Callable[[], str]:
    """One AMP epoch of ``config`` on CUDA, in this process, as ``detkd train``/``distill`` runs it."""

    def check() -> str:
        from detkd.config import DistillConfig, load_any_config
        from detkd.distill.build import build_distill_task
        from detkd.engine.trainer import train
        from detkd.experiments.bundled import bundled_teacher

        run_dir = work / Path(config).stem
        teacher = [f"teacher.checkpoint={bundled_teacher().path}"] if distill else []
        overrides = [*TOY, *SIZES[kind], f"data.synth.cache_dir={work / 'data'}", f"output_dir={run_dir}", *teacher]
        cfg = load_any_config(config, overrides)
        if distill != isinstance(cfg, DistillConfig):
            raise CheckFailed(f"{config}: expected a {'distillation' if distill else 'training'} config")
        kwargs = {"task_builder": build_distill_task} if distill else {}
        train(cfg, overwrite=True, **kwargs)
        return finite_losses(run_dir)

    return check


def forward_check(work: Path) -> str:
    """The bundled teacher on two generated images, on CPU and on CUDA: FPN maps within
    :data:`FEATURE_RTOL`, and each CPU detection scoring 0.5 or more found on CUDA (same label, IoU >= 0.9)."""
    from torchvision.ops import box_iou

    from detkd.config import load_config
    from detkd.data.build import build_dataset
    from detkd.data.from_config import resolve_source
    from detkd.experiments.bundled import bundled_teacher
    from detkd.models import build_model
    from detkd.models.weights import load_checkpoint_weights

    cfg = load_config("configs/synth/teacher.yaml", [*TOY[:2], f"data.synth.cache_dir={work / 'data'}"])
    source = resolve_source(cfg.data)
    images = [build_dataset(source.format, source.root, split="test", classes=source.classes)[i][0] for i in (0, 1)]
    model = build_model(cfg.model, len(source.classes) + 1).eval()
    load_checkpoint_weights(model, bundled_teacher().path)
    with torch.no_grad():
        batch, _ = model.transform(images)
        cpu_maps, cpu_dets = model.backbone(batch.tensors), model(images)
        model.cuda()
        gpu_maps = model.backbone(batch.tensors.cuda())
        gpu_dets = model([im.cuda() for im in images])
    worst = max(((cpu_maps[k] - gpu_maps[k].cpu()).abs().max() / cpu_maps[k].abs().max()).item() for k in cpu_maps)
    if worst > FEATURE_RTOL:
        raise CheckFailed(f"FPN maps differ by {worst:.2e} of their scale (limit {FEATURE_RTOL:g})")
    for cpu, gpu in zip(cpu_dets, gpu_dets):
        keep = cpu["scores"] >= 0.5
        iou = box_iou(cpu["boxes"][keep], gpu["boxes"].cpu())
        same = cpu["labels"][keep][:, None] == gpu["labels"].cpu()[None, :]
        if keep.any() and not bool(((iou >= 0.9) & same).any(dim=1).all()):
            raise CheckFailed("a CPU detection scoring >= 0.5 has no CUDA match (same label, IoU >= 0.9)")
    return f"FPN maps within {worst:.1e}, {int(sum((d['scores'] >= 0.5).sum() for d in cpu_dets))} detections matched"


def run_detkd(args: list[str], launcher: list[str] | None = None) -> str:
    """``detkd ARGS`` in a subprocess (under ``launcher``, e.g. torchrun); its stdout, or :class:`CheckFailed`."""
    command = [*(launcher or [sys.executable]), "-m", "detkd", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckFailed(f"exit {done.returncode}: {last}")
    return done.stdout


def bench_check(work: Path) -> str:
    """``detkd bench`` of the demo's teacher and students on CUDA in fp16."""
    configs = [f"configs/synth/{n}.yaml" for n in ("teacher", "student_small", "student_lowres")]
    rows = json.loads(run_detkd(["bench", *configs, "--device", "cuda", "--amp", "fp16", "--rounds", "3", "--json"]))
    if len(rows) != 3 or any(not r.get("latency_ms") for r in rows):
        raise CheckFailed(f"expected 3 timed rows, got {rows}")
    return ", ".join(f"{r['name']} {r['latency_ms']:.1f} ms" for r in rows)


def nccl_check(work: Path) -> str:
    """Two processes on two GPUs under torchrun: ``detkd distill`` of distill_small.yaml (NCCL)."""
    from detkd.experiments.bundled import bundled_teacher

    if torch.cuda.device_count() < 2:
        raise CheckSkipped(f"{torch.cuda.device_count()} GPU: needs two")
    run_dir = work / "nccl"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run_detkd(["distill", "configs/synth/distill_small.yaml", *TOY, *SIZES["small"], f"output_dir={run_dir}",
               f"data.synth.cache_dir={work / 'data'}", f"teacher.checkpoint={bundled_teacher().path}"], launcher)
    return finite_losses(run_dir)


class CheckSkipped(Exception):
    """A check that does not apply to this machine (the reason)."""


def checks(work: Path) -> dict[str, Callable[[], str]]:
    return {
        "amp_train_small": train_check("configs/synth/student_small.yaml", "small", work, distill=False),
        "amp_train_lowres": train_check("configs/synth/student_lowres.yaml", "lowres", work, distill=False),
        "amp_distill_small": train_check("configs/synth/distill_small.yaml", "small", work, distill=True),
        "amp_distill_lowres": train_check("configs/synth/distill_lowres.yaml", "lowres", work, distill=True),
        "cpu_cuda_forward": lambda: forward_check(work),
        "bench_fp16": lambda: bench_check(work),
        "nccl_distill": lambda: nccl_check(work),
    }


def run_checks(names: list[str], work: Path) -> int:
    """Run the checks, one line each; -> the number that failed."""
    failed = 0
    for name, check in checks(work).items():
        if names and name not in names:
            continue
        start = time.perf_counter()
        try:
            status, text = "PASS", check()
        except CheckSkipped as e:
            status, text = "SKIP", str(e)
        except Exception as e:  # noqa: BLE001 (a failed check: one line, then the next check)
            status, text = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            failed += 1
        print(f"{status} {name:<19} {time.perf_counter() - start:6.1f} s  {text}", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=CHECKS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated check names (default: all)")
    parser.add_argument("--keep", metavar="DIR", help="keep the runs in DIR (default: a temporary folder)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else []
    unknown = [n for n in names if n not in checks(Path("."))]
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; the checks are listed in --help")
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU found (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
              "nothing checked")
        return 0
    print(f"gpu_check: {torch.cuda.device_count()} GPU(s), {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    os.chdir(Path(__file__).resolve().parents[1])  # configs/ of this checkout
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        failed = run_checks(names, work)
    print(f"gpu_check: {'all passed' if not failed else f'{failed} failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
