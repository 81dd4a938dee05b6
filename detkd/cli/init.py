"""``detkd init``: the five configs of a distillation study, chosen from a dataset."""

from __future__ import annotations

import argparse
import logging
import os

from detkd.cli.common import parse_names
from detkd.cli.data import positive_int

log = logging.getLogger("detkd")

HELP = """\
Read a dataset (as `detkd data stats` does) and write the configs of a distillation study on it
to OUT: teacher.yaml, student_small.yaml (a smaller architecture at the teacher's input size),
student_lowres.yaml (the teacher's architecture at half its input size), distill_small.yaml and
distill_lowres.yaml (detkd's recipe, configs/_base_/distill_recipe.yaml, found by name in the
installed package), _base.yaml (data, anchors, schedule) and README.md: the commands to run them,
in order (data stats, train, doctor, distill, ablate, bench, export). `detkd demo --data OUT`
runs the five and writes a report.

Chosen from the data: the splits (VOC: ImageSets/Main train/test, trainval/test or train/val;
KITTI: ImageSets/train.txt and val.txt, else every 5th image held out, lists in OUT/splits;
COCO: the instances files with train and val in their names); the classes (all found, sorted;
KITTI: Car, Pedestrian, Cyclist); the input size (the images' median shorter side, at most 800
px for --models gpu, 320 px for cpu); five anchor sizes doubling per FPN level, centred on the
box sizes at that input size; the number of epochs from the number of training images.

--models gpu (default): ResNet-50-FPN teacher, ResNet-18-FPN student, ImageNet backbones
(downloaded on first use), torchvision's SGD schedule with mixed precision. --models cpu: the
small and tiny presets from scratch, AdamW (as configs/bccd).

examples:
  detkd init datasets/VOCdevkit/VOC2007 --format voc --out studies/voc07
  detkd init ../shared/data/bccd/BCCD --format voc --models cpu --out bccd_study
  detkd init data/kitti/training --format kitti --classes Car,Pedestrian --out kitti_study
  detkd init ../shared/data/bccd/BCCD --format voc --models cpu --size 64 --epochs 1 --teacher-epochs 1 \
      --limit 8 --out smoke   (a first run in minutes: does everything work end to end?)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("init", help="write the configs of a distillation study chosen from a dataset",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", metavar="DATA_ROOT", help="the dataset folder (as --root of detkd data stats)")
    parser.add_argument("--format", required=True, choices=("voc", "coco", "kitti"), help="the layout on disk")
    parser.add_argument("--classes", type=parse_names, help="comma-separated class names, in label order "
                        "(default: every class found, sorted; KITTI: Car, Pedestrian, Cyclist)")
    parser.add_argument("--out", metavar="DIR", help="where to write the study (default: study_<DATA_ROOT's name>)")
    parser.add_argument("--models", choices=("gpu", "cpu"), default="gpu",
                        help="gpu: ResNet-50 teacher, ResNet-18 student (default); cpu: the small/tiny presets")
    parser.add_argument("--train-split", help="the training split, instead of the one found (with --test-split)")
    parser.add_argument("--test-split", help="the evaluation split, instead of the one found (with --train-split)")
    parser.add_argument("--size", type=positive_int, metavar="PX", help="the teacher's input shorter side instead of "
                        "the one chosen from the images")
    parser.add_argument("--epochs", type=positive_int, help="the students' epochs instead of the chosen number "
                        "(the cpu teacher trains 8x as long)")
    parser.add_argument("--teacher-epochs", type=positive_int, metavar="N", help="the teacher's epochs instead")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="train on the first N training images "
                        "only (data.limit; a quick first run)")
    parser.add_argument("--force", action="store_true", help="replace the study's files when they exist")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.errors import DetkdError
    from detkd.experiments.study import inspect_data, plan_study, write_study

    if bool(args.train_split) != bool(args.test_split):
        raise DetkdError("--train-split and --test-split go together")
    out = args.out or f"study_{os.path.basename(os.path.normpath(args.root)).lower()}"
    splits = (args.train_split, args.test_split) if args.train_split else None
    data = inspect_data(args.format, args.root, out, args.classes, splits)
    plan = plan_study(data, args.models, args.size, args.epochs, args.limit, args.teacher_epochs)
    written = write_study(data, plan, out, args.force)
    used = f" (the first {plan.limit} used: --limit)" if plan.limit and plan.limit < data.train_images else ""
    print(f"{data.train_images} training{used} and {data.test_images} evaluation images, classes "
          f"{', '.join(data.classes)}")
    print(f"input {plan.min_size} px (max {plan.max_size}), anchors {plan.anchor_sizes}, {plan.models} models, "
          f"students {plan.epochs} epochs, teacher {plan.teacher_epochs}")
    for note in data.notes:
        print(f"note: {note}")
    print(f"wrote {len(written)} files to {os.path.abspath(out)}; the commands, in order: "
          f"{os.path.join(os.path.abspath(out), 'README.md')}; all at once: detkd demo --data {out}")
    return 0
