"""``detkd doctor``: can this teacher teach this student, and which term drives the gradient."""

from __future__ import annotations

import argparse
import json
import os

from detkd.cli.common import print_json
from detkd.cli.train import add_config_args, read_config

HELP = """\
Diagnose a distillation config before hours of training (or a run midway, with --student): on
--batches batches of the config's training split (evenly spread, no augmentation), with the
teacher checkpoint and the student the config builds, measure

  teacher    its AP50 on those images; on the student's sampled positive RoIs its mean
             P(true class), how often its argmax is right and how often it is background;
             on negatives its P(background); its RPN objectness AUC (positive against
             negative anchors, on its own anchors)
  alignment  the level pairing, the share of the student's sampled anchors that found a
             teacher anchor, and whether ground-truth boxes mapped through the distillation
             code score as the teacher scores them in its own frame (a resolution or
             level-pairing error shows here first)
  balance    each term's raw and weighted value and its share of the gradient norm on the
             student's backbone, FPN, RPN and RoI head (one autograd.grad per term); for
             hints, the share of the teacher maps' variance that is a per-channel constant

then print verdicts and advice, each naming the config key to change and the number behind
it (thresholds: detkd/doctor/advice.py). Nothing is written unless --out DIR is given
(doctor.md, doctor.json, doctor.png: the gradient shares per module as stacked bars).

JSON keys (--json): teacher.{ap50, pos_p_true, pos_acc, pos_argmax_bg, neg_p_bg,
rpn_separation}, alignment.{pairing, anchor_match_share, mapped_gt_score_gap},
terms.<name>.{raw, weighted, grad_share.{backbone, fpn, rpn, roi_heads}}, verdicts, advice
(a list of {key, suggestion, evidence}).

examples:
  detkd doctor configs/bccd/distill_small.yaml
  detkd doctor configs/synth/distill_lowres.yaml --batches 4 --out runs/doctor/lowres
  detkd doctor configs/bccd/distill_lowres.yaml --student runs/bccd/distill_lowres/last.pt --json"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="diagnose a distillation config: teacher, alignment, gradient balance",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--batches", type=int, default=8, metavar="N", help="batches measured (default: 8)")
    parser.add_argument("--student", metavar="CKPT", help="a student checkpoint (e.g. a run's last.pt) instead of "
                        "the student as configured")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    parser.add_argument("--out", metavar="DIR", help="write doctor.md, doctor.json and doctor.png there")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.config import DistillConfig, is_distill_config
    from detkd.doctor.report import report_markdown, report_text
    from detkd.doctor.run import run_doctor
    from detkd.errors import DetkdError

    cfg = read_config(args, DistillConfig)
    if not is_distill_config(args.config):
        raise DetkdError(f"{args.config}: not a distillation config (no teacher: section), e.g. "
                         "configs/synth/distill_small.yaml")
    report = {"config": args.config, **run_doctor(cfg, args.batches, args.student)}
    if args.out:
        write_report(report, args.out, report_markdown(report))
    if args.json:
        print_json(report)
    else:
        print(report_text(report), end="")
    return 0


def write_report(report: dict, out_dir: str, markdown: str) -> None:
    """``doctor.md``, ``doctor.json`` and ``doctor.png`` in ``out_dir``."""
    from detkd.doctor.report import plot_shares
    from detkd.errors import DetkdError
    from detkd.utils.io import atomic_write

    try:
        os.makedirs(out_dir, exist_ok=True)
        with atomic_write(os.path.join(out_dir, "doctor.md")) as f:
            f.write(markdown)
        with atomic_write(os.path.join(out_dir, "doctor.json")) as f:
            json.dump(report, f, indent=1)
        plot_shares(report, os.path.join(out_dir, "doctor.png"))
    except OSError as e:
        raise DetkdError(f"{out_dir}: cannot write the doctor's report ({e.strerror or e})") from None
