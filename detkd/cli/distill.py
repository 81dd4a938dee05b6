"""``detkd distill``: train a student against a frozen teacher (Chen et al. 2017)."""

from __future__ import annotations

import argparse

from detkd.cli.train import add_config_args, print_summary, read_config

HELP = """\
Train a student Faster R-CNN with the detection losses plus the distillation terms of
Chen et al. (NeurIPS 2017), from a frozen teacher checkpoint: weighted soft cross-entropy on
the RoI head and the RPN objectness, teacher-bounded L2 regression on both, and hints through
1x1-conv adaptation layers; Hinton KD, DIST and attention transfer as alternatives. Each term
has its section under `distill:` (enabled, weights); the teacher is `teacher.config` and
`teacher.checkpoint`. Same run directory, progress, checkpoints, --resume and torchrun as
`detkd train`; the run log says how student and teacher FPN levels were paired.

examples:
  detkd distill configs/synth/distill_lowres.yaml
  detkd distill configs/bccd/distill_small.yaml distill.hint.enabled=false distill.rcn_cls.mu=0.7"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("distill", help="train a student against a frozen teacher (Chen et al. 2017)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.config import DistillConfig
    from detkd.distill.build import build_distill_task
    from detkd.engine.trainer import train

    print_summary(train(read_config(args, DistillConfig), resume=args.resume, task_builder=build_distill_task,
                        overwrite=args.overwrite))
    return 0
