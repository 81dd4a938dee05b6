"""Time each metric family (coco, voc07, voc, kitti) on synthetic ground truth and detections.

    python bench/eval_speed.py --images 5000 --dets 100 --classes 20 --seed 0

Ground truth: 2..8 objects an image (10% difficult), KITTI truncation/occlusion, 0..2
DontCare regions and 0..1 neighbour objects; detections: ``--dets`` an image, two jittered
copies of each object (high scores) and uniformly random boxes (low scores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkd.data.dataset import DatasetIndex  # noqa: E402
from detkd.data.records import ImageRecord  # noqa: E402
from detkd.evaluation.build import EVALUATORS  # noqa: E402

WIDTH, HEIGHT = 1242, 375


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n, 4]`` float32 xyxy boxes inside the image, 10..300 px wide, 10..200 px high."""
    w = rng.uniform(10, 300, n)
    h = rng.uniform(10, 200, n)
    x = rng.uniform(0, WIDTH - w)
    y = rng.uniform(0, HEIGHT - h)
    return np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)


def synthetic_record(rng: np.random.Generator, i: int, classes: int) -> ImageRecord:
    n = int(rng.integers(2, 9))
    n_dc, n_nb = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    return ImageRecord(
        image_id=f"{i:06d}", file_name=f"/synthetic/{i:06d}.png", width=WIDTH, height=HEIGHT,
        boxes=random_boxes(rng, n), labels=rng.integers(1, classes + 1, n).astype(np.int64),
        difficult=rng.random(n) < 0.1,
        ignore_boxes=random_boxes(rng, n_dc), ignore_labels=np.zeros(n_dc, dtype=np.int64),
        extras={
            "truncated": rng.choice([0.0, 0.1, 0.2, 0.4, 0.6], n).astype(np.float32),
            "occluded": rng.integers(0, 4, n).astype(np.int64),
            "neighbor_boxes": random_boxes(rng, n_nb),
            "neighbor_labels": rng.integers(1, classes + 1, n_nb).astype(np.int64),
        },
    )


def synthetic_prediction(rng: np.random.Generator, record: ImageRecord, dets: int, classes: int) -> dict:
    gt = np.repeat(record.boxes, 2, axis=0)[:dets]
    size = np.concatenate([gt[:, 2:] - gt[:, :2]] * 2, axis=1)
    jittered = gt + rng.normal(0, 0.08, gt.shape).astype(np.float32) * size
    n_rand = dets - len(jittered)
    boxes = np.concatenate([jittered, random_boxes(rng, n_rand)])
    labels = np.concatenate([np.repeat(record.labels, 2)[: len(jittered)], rng.integers(1, classes + 1, n_rand)])
    scores = np.concatenate([rng.uniform(0.3, 1.0, len(jittered)), rng.uniform(0.0, 0.6, n_rand)])
    return {"image_id": record.image_id, "boxes": boxes, "scores": scores.astype(np.float32), "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100, help="detections an image")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default="coco,voc07,voc,kitti")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    records = [synthetic_record(rng, i, args.classes) for i in range(args.images)]
    index = DatasetIndex(format="kitti", root="/synthetic", split=None,
                         classes=tuple(f"class{k}" for k in range(1, args.classes + 1)), records=records)
    predictions = [synthetic_prediction(rng, r, args.dets, args.classes) for r in records]
    n_gt = sum(len(r.labels) for r in records)
    n_det = sum(len(p["scores"]) for p in predictions)
    print(f"images {args.images}, ground-truth objects {n_gt}, detections {n_det}, classes {args.classes}, "
          f"cpus {os.cpu_count()}")
    print(f"| {'family':<6} | {'wall s':>8} | {'cpu s':>8} | {'headline':>9} |")
    print(f"|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for family in args.families.split(","):
        start, cpu = time.perf_counter(), time.process_time()
        evaluator = EVALUATORS.get(family)(index, None)
        evaluator.process(predictions)
        result = evaluator.evaluate()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"| {family:<6} | {seconds:8.2f} | {cpu:8.2f} | {headline(family, result):>9} |", flush=True)
    print("target: < 60 s each on 2 cores")


def headline(family: str, result: dict) -> str:
    if family == "coco":
        value = result["AP"]
    elif family == "kitti":
        vals = [v["moderate"] for v in result.values() if v["moderate"] is not None]
        value = sum(vals) / len(vals) if vals else None
    else:
        value = result["mAP"]
    return "-" if value is None else f"{100 * value:.2f}"


if __name__ == "__main__":
    main()
