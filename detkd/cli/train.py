"""``detkd train`` and ``detkd eval``: train a detector from a YAML config, score a checkpoint."""

from __future__ import annotations

import argparse
import logging
import os

from detkd.cli.common import print_json
from detkd.errors import DetkdError

log = logging.getLogger("detkd")

TRAIN_HELP = """\
Train one Faster R-CNN detector on the detection losses, as CONFIG describes (see configs/).
KEY=VALUE arguments after CONFIG override any config key,
e.g. train.lr=0.01 data.limit=100.

The run directory (output_dir) gets config.yaml (the resolved config), last.pt (every epoch
end, and every train.checkpoint_every iterations), best.pt (best train.metric so far),
metrics.jsonl (losses every train.log_every iterations, metrics at every evaluation) and
results.json (the latest evaluation's detections, COCO results format).

The run directory is locked while the run lives (a second run on it is refused; the lock of a
process that died is taken over). A directory that already holds a run is not overwritten:
pass --resume to continue it from its last checkpoint (data order, RNG states, optimizer and
schedule included; on CPU with data.num_workers=0 a resumed run ends bit-identical to an
uninterrupted one), --overwrite to replace it, or choose another output_dir. --resume on a
directory without last.pt starts a new run in its place. A resume may change train.epochs,
train.eval_every, train.log_every, train.checkpoint_every, train.metric, data.num_workers and
device (it says which it applied); any other changed key is refused before anything is written.
Weights are checked before every checkpoint: a step that leaves NaN or infinite weights stops the
run with an error naming the iteration, and the last good last.pt stays.

examples:
  detkd train configs/synth/teacher.yaml
  detkd train configs/bccd/student_small.yaml output_dir=runs/bccd_s train.epochs=24
  detkd train configs/synth/teacher.yaml --resume
  torchrun --nproc_per_node 4 -m detkd train configs/voc/teacher_r50.yaml   # 4 GPUs (DDP)
  torchrun --nproc_per_node 2 -m detkd train configs/synth/teacher.yaml device=cpu  # 2 CPU processes (gloo)"""

EVAL_HELP = """\
Evaluate a checkpoint (last.pt, best.pt, or a plain state dict of the model CONFIG describes)
on the test split of CONFIG's dataset: prints the metrics table of the dataset's format
(COCO AP and PASCAL VOC AP50 for every format, KITTI's Easy/Moderate/Hard for KITTI data) and
writes the detections as a COCO results JSON, by default next to the checkpoint
(CHECKPOINT_STEM_SPLIT_results.json). KEY=VALUE arguments after CONFIG override config keys. Runs under
torchrun too (the images are shared out).

examples:
  detkd eval configs/synth/teacher.yaml --checkpoint runs/synth/teacher/best.pt
  detkd eval configs/bccd/teacher.yaml --checkpoint runs/bccd/teacher/best.pt --split val --json
  detkd eval configs/bccd/teacher.yaml data.root=/data/BCCD --checkpoint best.pt --results dets.json
  detkd eval configs/voc/teacher_tv_r50v2.yaml     (torchvision's COCO weights on VOC's classes, no training)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train a detector from a YAML config (resumable, torchrun for several GPUs)",
        description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(train)
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last.pt")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on the config's test split (metrics table, results JSON)",
        description=EVAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(ev)
    ev.add_argument("--checkpoint", metavar="PATH", help="a detkd checkpoint or a model state dict; without it, "
                    "the config's model.weights (a pretrained detector, e.g. COCO) is scored as it is, its "
                    "classes matched to the data's by name")
    ev.add_argument("--split", metavar="NAME", help="the split to evaluate (default: data.test_split)")
    ev.add_argument("--results", metavar="OUT.json", help="where to write the COCO results JSON "
                    "(default: next to the checkpoint)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON keyed by family, "
                    "as `detkd evaluate --json` does")
    ev.set_defaults(func=run_eval)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="a YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=0.01")


def read_config(args: argparse.Namespace, schema: type | None = None):  # -> detkd.config.Config
    from detkd.config import Config, load_config
    from detkd.config.files import find_config

    args.config = find_config(args.config)  # not here: detkd's own config of that name
    if not os.path.isfile(args.config):
        raise DetkdError(f"{args.config}: config file not found")
    for text in args.overrides:
        if "=" not in text:
            raise DetkdError(f"{text!r}: an override is KEY=VALUE (e.g. train.lr=0.01)")
    return load_config(args.config, args.overrides, schema=schema or Config)


def run_train(args: argparse.Namespace) -> int:
    from detkd.engine.trainer import train

    print_summary(train(read_config(args), resume=args.resume, overwrite=args.overwrite))
    return 0


def print_summary(summary: dict) -> None:
    """The best checkpoint of a finished run (rank 0 only)."""
    best = summary["best"]
    if summary.get("is_main", True) and best["value"] is not None:
        print(f"best {best['metric']} = {best['value']:.4f} at epoch {best['epoch']}: "
              f"{os.path.join(summary['run_dir'], 'best.pt')}")


def run_eval(args: argparse.Namespace) -> int:
    from detkd.engine.inference import evaluate_checkpoint
    from detkd.evaluation.build import format_metrics_table

    cfg = read_config(args)
    if args.checkpoint is None and not cfg.model.weights:
        raise DetkdError("detkd eval: give --checkpoint PATH (or a config whose model.weights is a pretrained "
                         "detector, scored as it is)")
    outcome = evaluate_checkpoint(cfg, args.checkpoint, split=args.split, results_path=args.results)
    if not outcome.is_main:
        return 0
    if args.json:
        print_json(outcome.metrics)
    else:
        print(format_metrics_table(outcome.metrics, outcome.classes))
    log.info("wrote the detections to %s", outcome.results_path)
    return 0
