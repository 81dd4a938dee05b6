"""``detkd evaluate``: score a COCO-format results file against a dataset."""

from __future__ import annotations

import argparse

from detkd.cli.common import add_dataset_args, index_from_args, print_json

HELP = """\
Score detections written as a standard COCO results JSON (a list of
{"image_id", "category_id", "bbox": [x, y, w, h], "score"}) against a dataset, with
every metric family that applies: COCO (pycocotools: AP@[.5:.95], AP50, AP75, APs/m/l,
per class), PASCAL VOC AP50 (VOC2007 11-point and VOC2010+ all-point) and, for KITTI
data, KITTI's Easy/Moderate/Hard AP.

Ids: for COCO data, the dataset's own image and category ids; for VOC and KITTI,
image_id is the image file name without extension (e.g. "000005") and category_id
is 1..K in class order (--classes, or the classes found in the data, sorted)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a COCO-format results file (COCO, VOC and KITTI metrics)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_args(parser)
    parser.add_argument("--results", required=True, metavar="DETS.json", help="COCO-format results file")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout, keyed by metric family")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.evaluation.build import evaluate_predictions, format_metrics_table
    from detkd.evaluation.results import load_results

    index = index_from_args(args)
    predictions = load_results(args.results, index)
    metrics = evaluate_predictions(index, predictions)
    if args.json:
        print_json(metrics)
    else:
        print(format_metrics_table(metrics, index.classes))
    return 0

