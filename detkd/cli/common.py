"""Arguments shared by the subcommands that read a dataset."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Any

from detkd.config import FORMATS
from detkd.data.build import load_index
from detkd.data.common import DataWarning
from detkd.data.dataset import DatasetIndex
from detkd.errors import DetkdError

log = logging.getLogger("detkd")

DISK_FORMATS = tuple(f for f in FORMATS if f != "synth")  # the embedded dataset is generated, not read


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--format", required=True, choices=DISK_FORMATS, help="the layout on disk (see datasets/README.md)")
    group.add_argument("--root", required=True, help="dataset folder (VOC: the VOC2007-style folder; KITTI: the folder with image_2/ and label_2/; COCO: the folder with annotations/ and the image folders)")
    group.add_argument("--split", help="split name (VOC: ImageSets/Main/NAME.txt; KITTI: ImageSets/NAME.txt or a file list; COCO: annotations/instances_NAME.json and images in NAME/). Default: every annotated image (VOC, KITTI)")
    group.add_argument("--ann", help="COCO only: the instances JSON file, when it is not annotations/instances_SPLIT.json")
    group.add_argument("--classes", type=parse_names, help="comma-separated class names, in label order (default: the classes found in the data, sorted)")
    group.add_argument("--class-map", type=parse_class_map, help="KITTI only: raw type to class, e.g. Van=Car,Person_sitting=Pedestrian")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a count of images, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def parse_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise argparse.ArgumentTypeError(f"empty class name in {text!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a class is named twice in {text!r}")
    return names


def parse_class_map(text: str) -> dict[str, str]:
    mapping = {}
    for item in text.split(","):
        raw, sep, name = item.partition("=")
        if not sep or not raw.strip() or not name.strip():
            raise argparse.ArgumentTypeError(f"expected RAW=CLASS pairs, got {item!r}")
        mapping[raw.strip()] = name.strip()
    return mapping


def index_from_args(args: argparse.Namespace) -> DatasetIndex:
    """Read the dataset the arguments name, and print the reader's warnings on stderr."""
    if args.ann and args.format != "coco":
        raise DetkdError("--ann applies to --format coco only")
    if args.class_map and args.format != "kitti":
        raise DetkdError("--class-map applies to --format kitti only")
    with warnings.catch_warnings():  # the reader's warning is printed below, as one clean line
        warnings.simplefilter("ignore", DataWarning)
        index = load_index(
            args.format, args.root, split=args.split, ann=args.ann, classes=args.classes, class_map=args.class_map
        )
    for line in index.report.summary_lines(args.root):
        log.warning("warning: %s", line)
    return index


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
