"""Training throughput of one detkd job alone against several at once on the same cores.

    python bench/contention.py --config configs/synth/teacher.yaml --jobs 2 --iters 40

Runs ``detkd train CONFIG`` for ``--iters`` iterations (``data.limit`` images, one epoch) once
alone, then ``--jobs`` copies at the same time, each in its own run folder, and reports each run's
images per second: the median of its ``metrics.jsonl`` records after the first (warm-up) one.
Sharing the cores fairly costs each of J jobs at most a factor J; much more than that is
oversubscription (every job's threads waiting on threads that another job has descheduled).
``--env KEY=VALUE`` sets variables for every job (e.g. ``OMP_NUM_THREADS=2`` to undo detkd's
thread defaults and see the problem), and the first line of the output says what each job ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def job_command(config: str, run_dir: Path, iters: int, batch: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "detkd", "train", config, f"output_dir={run_dir}", "train.epochs=1",
            f"data.limit={iters * batch}", f"train.batch_size={batch}", "train.log_every=5", "train.eval_every=0",
            *extra]


def run_jobs(config: str, count: int, iters: int, batch: int, extra: list[str], env: dict[str, str],
             folder: Path) -> list[float]:
    """Start ``count`` jobs at once; -> their images per second."""
    dirs = [folder / f"job{i}" for i in range(count)]
    procs = [subprocess.Popen(job_command(config, d, iters, batch, extra), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for d in dirs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a job failed:\n{err[-2000:]}")
    return [images_per_second(d / "metrics.jsonl") for d in dirs]


def images_per_second(path: Path) -> float:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    speeds = [r["img_per_s"] for r in records if r.get("type") == "train"][1:]
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/synth/teacher.yaml")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every job")
    args = parser.parse_args()
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    print(f"{args.config}: {args.iters} iterations of {args.batch} images a job; env {args.env or 'as is'}; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        alone = run_jobs(args.config, 1, args.iters, args.batch, args.overrides, env, Path(tmp) / "alone")[0]
        together = run_jobs(args.config, args.jobs, args.iters, args.batch, args.overrides, env, Path(tmp) / "together")
        wall = time.perf_counter() - start
    print("| run | img/s | slowdown vs alone |\n|---|---:|---:|")
    print(f"| alone | {alone:.2f} | 1.00x |")
    for i, speed in enumerate(together):
        print(f"| {args.jobs} at once, job {i + 1} | {speed:.2f} | {alone / speed:.2f}x |")
    total = sum(together)
    print(f"\ntogether: {total:.2f} img/s in all ({total / alone:.2f}x the lone job's); fair sharing would slow "
          f"each job by at most {args.jobs}x. {wall:.0f} s wall.")


if __name__ == "__main__":
    main()
