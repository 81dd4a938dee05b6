#!/usr/bin/env python3
"""Make the PASCAL VOC 07+12 folder: VOC2007 and VOC2012 joined through symbolic links.

The standard "07+12" setting trains on VOC2007 trainval + VOC2012 trainval and tests on VOC2007
test. detkd reads one VOC folder per split, so this script makes ``VOCdevkit/VOC0712`` once:
``Annotations/`` and ``JPEGImages/`` hold a symbolic link per file of both years (no copies; the
file names of the two years never collide), ``ImageSets/Main/trainval.txt`` lists both years'
trainval stems and ``ImageSets/Main/test.txt`` is VOC2007's test list. ``configs/voc/*.yaml``
expect it at ``datasets/VOCdevkit/VOC0712``.

An existing VOC0712 folder is not touched unless ``--force`` is given.

Example:
    python datasets/prepare_voc0712.py datasets/VOCdevkit
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

YEARS = ("VOC2007", "VOC2012")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("devkit", help="the VOCdevkit folder holding VOC2007/ and VOC2012/")
    parser.add_argument("--out", help="the folder to make (default DEVKIT/VOC0712)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    return parser.parse_args(argv)


def read_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise SystemExit(f"prepare_voc0712: error: {path} is missing")
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def link_files(src: str, dst: str) -> int:
    """A symbolic link in ``dst`` to every file of ``src``; the number of links made."""
    if not os.path.isdir(src):
        raise SystemExit(f"prepare_voc0712: error: {src} is missing")
    os.makedirs(dst, exist_ok=True)
    names = os.listdir(src)
    for name in names:
        target = os.path.join(dst, name)
        if os.path.lexists(target):
            raise SystemExit(f"prepare_voc0712: error: {name} is in both years ({target})")
        os.symlink(os.path.abspath(os.path.join(src, name)), target)
    return len(names)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or os.path.join(args.devkit, "VOC0712")
    lists = {y: read_list(os.path.join(args.devkit, y, "ImageSets", "Main", "trainval.txt")) for y in YEARS}
    test = read_list(os.path.join(args.devkit, "VOC2007", "ImageSets", "Main", "test.txt"))
    if os.path.exists(out):
        if not args.force:
            raise SystemExit(f"prepare_voc0712: error: {out} exists (use --force to replace it)")
        shutil.rmtree(out)
    for year in YEARS:
        for folder in ("Annotations", "JPEGImages"):
            link_files(os.path.join(args.devkit, year, folder), os.path.join(out, folder))
    main_dir = os.path.join(out, "ImageSets", "Main")
    os.makedirs(main_dir, exist_ok=True)
    trainval = lists["VOC2007"] + lists["VOC2012"]
    for name, stems in (("trainval", trainval), ("test", test)):
        with open(os.path.join(main_dir, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(s + "\n" for s in stems))
    print(f"wrote {out}: trainval {len(trainval)} images (07+12), test {len(test)} images (VOC2007)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
