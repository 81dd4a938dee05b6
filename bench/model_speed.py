"""Training and inference speed of detkd's model presets on CPU, side by side in one process.

    python bench/model_speed.py --presets small,tiny --sizes 320,160 --threads 2 --iters 10

Each model is fed 320x320 images (the embedded dataset's size) holding 4-12 boxes of 8-128 px and
resizes them itself to ``min_size`` = SIZE, as a low-resolution student does. Training img/s is a
full SGD step (forward with targets, backward, update) on batches of ``--batch`` images;
inference img/s is the eval-mode forward (with post-processing) on the same batches. Models are
measured in interleaved rounds (every model once per round) and the median round is reported,
so the numbers of different models are comparable. Models start from random weights, so
inference time includes a full set of detections (score threshold 0.05 is passed by many boxes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from detkd.config import ModelSection
from detkd.models import build_model

IMAGE_SIZE = 320
NUM_CLASSES = 10  # 9 shape classes + background, as the embedded dataset


def make_batch(batch: int, gen: torch.Generator) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Random images ``[3, 320, 320]`` and targets with 4-12 boxes of 8-128 px each."""
    images, targets = [], []
    for _ in range(batch):
        n = int(torch.randint(4, 13, (1,), generator=gen))
        size = torch.exp(torch.empty(n, 2).uniform_(2.08, 4.85, generator=gen))  # 8..128 px
        xy = torch.rand(n, 2, generator=gen) * (IMAGE_SIZE - size)
        images.append(torch.rand(3, IMAGE_SIZE, IMAGE_SIZE, generator=gen))
        labels = torch.randint(1, NUM_CLASSES, (n,), generator=gen)
        targets.append({"boxes": torch.cat([xy, xy + size], 1), "labels": labels})
    return images, targets


def train_seconds(model: torch.nn.Module, batches: list, opt: torch.optim.Optimizer) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one SGD step per batch."""
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for images, targets in batches:
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start, time.process_time() - cpu


@torch.no_grad()
def infer_seconds(model: torch.nn.Module, batches: list) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of the eval-mode forward of every batch."""
    model.eval()
    start, cpu = time.perf_counter(), time.process_time()
    for images, _ in batches:
        model(images)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="small,tiny", help="comma-separated presets (default: small,tiny)")
    parser.add_argument("--sizes", default="320,160", help="comma-separated model min_size values (default: 320,160)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--iters", type=int, default=10, help="batches timed per round (default: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported (default: 3)")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(args.batch, gen) for _ in range(args.iters)]
    runs = {}
    for preset in args.presets.split(","):
        for size in map(int, args.sizes.split(",")):
            model = build_model(ModelSection(preset=preset, min_size=size, max_size=size), NUM_CLASSES)
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
            train_seconds(model, batches[:2], opt)  # warm-up
            infer_seconds(model, batches[:2])
            runs[(preset, size)] = (model, opt, [], [])
    for _ in range(args.rounds):
        for model, opt, train_t, infer_t in runs.values():
            train_t.append(train_seconds(model, batches, opt))
            infer_t.append(infer_seconds(model, batches))
    images = args.iters * args.batch
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{args.iters} batches x {args.rounds} rounds")
    print(f"{'preset':<8} {'size':>5} {'params (M)':>11} {'train img/s':>12} {'infer img/s':>12} "
          f"{'train img/cpu-s':>16} {'infer img/cpu-s':>16}")
    for (preset, size), (model, _, train_t, infer_t) in runs.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rates = [images / statistics.median(t[i] for t in times) for i in (0, 1) for times in (train_t, infer_t)]
        print(f"{preset:<8} {size:>5} {params:>11.2f} {rates[0]:>12.1f} {rates[1]:>12.1f} {rates[2]:>16.1f} "
              f"{rates[3]:>16.1f}")
    print("img/s: wall clock (what a user sees on an idle machine); img/cpu-s: per CPU-second of this "
          "process, which other load on the machine barely changes")


if __name__ == "__main__":
    main()
