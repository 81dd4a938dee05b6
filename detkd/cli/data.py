"""``detkd data synth`` and ``detkd data stats``."""

from __future__ import annotations

import argparse

from detkd.cli.common import add_dataset_args, index_from_args, positive_int, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="write the embedded dataset, or count what a dataset holds")
    data_sub = parser.add_subparsers(title="data commands", metavar="COMMAND", required=True)

    synth = data_sub.add_parser(
        "synth",
        help="write the embedded (generated) dataset in VOC, KITTI and COCO layouts",
        description="Generate the embedded dataset: coloured shapes with similar pairs of classes, "
        "small to large objects, occlusion, clutter and textured backgrounds. Deterministic from the "
        "seed; written under OUT_DIR/voc, OUT_DIR/kitti and OUT_DIR/coco with train and test splits.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR")
    synth.add_argument("--images", type=positive_int, default=1000, help="number of images (default 1000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--profile", choices=("standard", "easy", "demo"), default="standard",
                       help="standard: objects of 8-128 px on 288-384 px images; easy: 16-64 px objects on "
                            "112-144 px images with little clutter; demo: the demo's, 16-80 px objects on "
                            "224-288 px images with little clutter (default standard)")
    synth.set_defaults(func=run_synth)

    stats = data_sub.add_parser(
        "stats",
        help="images, boxes per class, ignored/difficult, dropped and clipped boxes",
        description="Read a dataset as detkd's readers do and count what they keep and leave out.",
    )
    add_dataset_args(stats)
    stats.add_argument("--json", action="store_true", help="one JSON object on stdout")
    stats.add_argument("--check-images", action="store_true",
                       help="decode every image once: list the unreadable, truncated or wrongly sized ones "
                            "(without it, each file's end is read: truncated images are listed; exit status 1 "
                            "when there are any)")
    stats.set_defaults(func=run_stats)


def run_synth(args: argparse.Namespace) -> int:
    from detkd.data.stats import dataset_stats, format_stats
    from detkd.data.synth import generate_synth
    from detkd.data.voc import read_voc

    summary = generate_synth(args.out_dir, num_images=args.images, seed=args.seed, profile=args.profile)
    print(f"wrote the embedded dataset to {summary.out_dir} (seed {args.seed})")
    for split in ("train", "test"):
        index = read_voc(f"{summary.out_dir}/voc", split=split, classes=summary.classes)
        print(f"\n[{split}]\n{format_stats(dataset_stats(index))}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from detkd.data.stats import dataset_stats, format_stats

    from detkd.data.stats import check_images

    index = index_from_args(args)
    stats = dataset_stats(index)
    stats["bad_images"] = check_images(index, decode=args.check_images)  # without it: each file's end only
    stats["images_decoded"] = args.check_images
    if args.json:
        print_json(stats)
    else:
        print(format_stats(stats))
    return 1 if stats.get("bad_images") else 0
