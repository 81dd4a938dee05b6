#!/usr/bin/env python3
"""Write a train/val split of a KITTI 2D object folder: ROOT/ImageSets/train.txt and val.txt.

KITTI's 2D object benchmark ships only a training set (7,481 labelled images) and an unlabelled
test set, so a validation split is made from the training labels. Each output file lists one
image stem a line (e.g. ``000123``), the form ``detkd`` reads with ``--split train`` /
``--split val`` (or ``data.train_split`` / ``data.test_split`` in a config).

Two ways to choose the validation images:

- ``--val-fraction F --seed S``: a seeded random fraction F of the labelled stems (the split is
  the same on every machine for the same label files, F and S);
- ``--val-list FILE``: the stems listed in FILE (one a line, e.g. a published split such as
  the 3,712 / 3,769 split of Chen et al., 3DOP); every other labelled stem goes to train.

Existing split files are never overwritten unless ``--force`` is given.

Examples:
    python datasets/prepare_kitti_split.py data/kitti/training --val-fraction 0.5 --seed 0
    python datasets/prepare_kitti_split.py data/kitti/training --val-list val_3dop.txt --force
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", help="KITTI folder holding label_2/ (and image_2/), e.g. .../training")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--val-fraction", type=float, default=0.5, help="fraction of labelled images for val (default 0.5)")
    choice.add_argument("--val-list", help="file listing the val stems, one a line; the rest is train")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    parser.add_argument("--out-dir", help="where to write train.txt and val.txt (default ROOT/ImageSets)")
    parser.add_argument("--force", action="store_true", help="overwrite existing train.txt / val.txt")
    return parser.parse_args(argv)


def labelled_stems(root: str) -> list[str]:
    """The sorted stems of ``root/label_2/*.txt``."""
    label_dir = os.path.join(root, "label_2")
    if not os.path.isdir(label_dir):
        raise SystemExit(f"prepare_kitti_split: error: {label_dir} is missing (is ROOT a KITTI training folder?)")
    stems = sorted(os.path.splitext(n)[0] for n in os.listdir(label_dir) if n.endswith(".txt"))
    if not stems:
        raise SystemExit(f"prepare_kitti_split: error: no label files in {label_dir}")
    return stems


def split_stems(stems: list[str], args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``(train, val)`` stems, by the given list or by a seeded random fraction."""
    if args.val_list:
        with open(args.val_list, encoding="utf-8") as f:
            wanted = [line.strip() for line in f if line.strip()]
        unknown = sorted(set(wanted) - set(stems))
        if unknown:
            raise SystemExit(f"prepare_kitti_split: error: {args.val_list} lists stems without a label file: "
                             f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}")  # fmt: skip
        val = set(wanted)
    else:
        if not 0.0 < args.val_fraction < 1.0:
            raise SystemExit("prepare_kitti_split: error: --val-fraction must be between 0 and 1")
        shuffled = list(stems)
        random.Random(args.seed).shuffle(shuffled)
        val = set(shuffled[: max(1, round(len(stems) * args.val_fraction))])
    return [s for s in stems if s not in val], [s for s in stems if s in val]


def write_split(out_dir: str, name: str, stems: list[str]) -> str:
    """Write ``out_dir/<name>.txt``, one stem a line; returns its path."""
    path = os.path.join(out_dir, f"{name}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(s + "\n" for s in stems)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, split the labelled stems and write the two files."""
    args = parse_args(argv)
    stems = labelled_stems(args.root)
    train, val = split_stems(stems, args)
    out_dir = args.out_dir or os.path.join(args.root, "ImageSets")
    os.makedirs(out_dir, exist_ok=True)
    existing = [p for p in (os.path.join(out_dir, f"{n}.txt") for n in ("train", "val")) if os.path.exists(p)]
    if existing and not args.force:  # checked before writing anything: never half a split
        raise SystemExit(f"prepare_kitti_split: error: {', '.join(existing)} exist(s) (use --force to overwrite)")
    for name, part in (("train", train), ("val", val)):
        print(f"wrote {write_split(out_dir, name, part)} ({len(part)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
