"""``detkd ablate``: the paper's Tables 4 and 5 for a distillation config, over seeds."""

from __future__ import annotations

import argparse
import os

HELP = """\
Train the ablation grid of Chen et al. (NeurIPS 2017), Tables 4 and 5, for the distillation
CONFIG (a student config with `teacher:` and `distill:` sections): one student per row and
seed, each scored from its last checkpoint on the training and the test split.

rows (the paper's rows switch all five terms rcn_cls, rpn_cls, rcn_reg, rpn_reg, hint on or off
with the paper's settings, mu=0.5, T=1, nu=0.5, gamma=0.5, whatever the config's defaults are):
  baseline  the student trained alone (no teacher; always run); it starts where the distilled
            student starts (student.init: teacher -> from the teacher's weights)
  cls       soft CE on RPN and RoI head, no background weight (bg_weight=1.0)
  cls_w     soft CE with background weight 1.5 (the paper's w0)
  l2        plain L2 regression to the teacher's outputs, unbounded (bounded=false)
  l2_b      teacher-bounded L2 regression (bounded=true)
  hints     FPN hints without adaptation layers; only when student and teacher FPN channels
            are equal, else reported as n/a and not run
  hints_a   FPN hints through 1x1-conv adaptation layers
  all       cls_w + l2_b + hints_a: the full method
  pkd       PKD hints (Cao et al. 2022: standardised channels, MSE / 2), weight 6 per level,
            through adaptation layers; the other terms off
  recipe    the config's own distillation settings, as they are (e.g. configs/_base_/
            distill_recipe.yaml)
  distill   cls_w + l2_b, no hints (Table 5)
  with --terms: hinton (Hinton KD, uniform soft CE at T=4, on both heads), dist (DIST on the
  RoI head; the RPN term off, DIST applies to the RoI head only), and the methods of 2021-2022
  with their papers' Faster R-CNN settings, the other terms off: cwd (channel-wise
  distillation), fgd (focal and global distillation), mgd (masked generative distillation) as
  the hint on every FPN level (summed), dkd (decoupled KD) on the RoI head; recipe_cwd,
  recipe_fgd, recipe_mgd, recipe_dkd: the config's own settings with that method added as the
  hint (or as the RoI head's soft term, for dkd)
  with --variant NAME KEY=VALUE ...: a row of the config's own settings with those overrides
  (repeatable; put the common KEY=VALUE overrides before it); alone, only the baseline and
  the variants run unless --rows names more
Table 4: baseline, cls, cls_w, l2, l2_b, hints, hints_a, all, pkd, recipe (then the --terms and
--variant rows); Table 5: baseline, distill, hints_a, all, recipe. A row in both is trained once.

paired comparison: at seed S every row's student starts from the same initial weights as the
baseline's and sees the same images in the same order; each row's "paired gain" is the mean
over seeds of (row - baseline) at the same seed, with its 95 % Student-t interval.

the teacher: teacher.checkpoint of CONFIG when that file exists (scored only, in OUT/teacher);
otherwise it is trained first from teacher.config (OUT/teacher, seed 0) and every student
learns from OUT/teacher/last.pt. KEY=VALUE arguments after the options apply to every cell
(the teacher's: all but model.*, student.*, distill.* and teacher.*, which are the student's).

resumable: every row and seed is a run in OUT/<row>/seed<S>. A finished one (cell.json) is
read back, a killed one resumes from its last.pt; start the same command again to go on.
OUT/plan.json records CONFIG and the overrides; another setting on the same OUT is refused.

--jobs N trains N cells at a time, each in its own process with torch's threads shared among
them, its log in OUT/<row>/seed<S>/log.txt (the terminal shows every 30 s the latest line of
each running cell). On 2 cores, --jobs 2 (one thread each) finishes a grid sooner than one cell
after the other at two threads. A cell's numbers can depend on its thread count in the last
bits: keep the same --jobs (or train.threads) on one OUT so that the pairs stay exact.

outputs in OUT (rewritten after every cell): table4.md/.csv (AP50 and mAP mean ± std over
seeds, AP50 gain over the baseline, paired gain with ci95_low / ci95_high, share of the
teacher-baseline gap closed), table5.md/.csv
(train and test AP50 and their gains), ablation.png (mean AP50 per row with std bars, the
teacher and the baseline dashed) and ablation.json (every cell's scores and the rows).
AP50: VOC all-point AP at IoU 0.5 (voc.mAP); mAP: COCO AP@[.5:.95] (coco.AP).

examples:
  detkd ablate configs/synth/distill_small.yaml --seeds 3
  detkd ablate configs/bccd/distill_lowres.yaml --seeds 3 --split val --jobs 2
  detkd ablate configs/bccd/distill_small.yaml --split val --variant pkd2 distill.hint.gamma=2 \
      --variant add distill.rcn_cls.mode=add
  detkd ablate configs/synth/distill_lowres.yaml --seeds 1 --rows cls_w,all --terms dist train.epochs=2
  detkd ablate configs/bccd/distill_small.yaml --seeds 3 --rows recipe --terms cwd,fgd,mgd,dkd,recipe_cwd"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate", help="the paper's ablations (Tables 4 and 5) of a distillation config, over seeds (resumable)",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="CONFIG", help="a distillation config (with a teacher: section)")
    parser.add_argument("--seeds", type=int, default=5, metavar="N", help="seeds 0..N-1 per row (default: 5)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/ablate/<CONFIG stem>)")
    parser.add_argument("--rows", metavar="A,B", help="run only these rows (baseline is always run)")
    parser.add_argument("--terms", metavar="A,B", help="add these rows: hinton, dist, cwd, fgd, mgd, dkd, "
                        "recipe_cwd, recipe_fgd, recipe_mgd, recipe_dkd")
    parser.add_argument("--split", metavar="NAME", help="score on this split instead of data.test_split "
                        "(e.g. val, to choose settings without the test split)")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="a row of the config's own settings with these overrides (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="cells trained at the same time, torch's threads shared among them (default: 1)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every cell, "
                        "e.g. train.epochs=2")
    parser.set_defaults(func=run)


def names(text: str | None) -> list[str]:
    """``a,b`` -> ``["a", "b"]``; None -> ``[]``."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def run(args: argparse.Namespace) -> int:
    from detkd.experiments.ablate import plan_ablation, run_ablation, table4_markdown, table5_markdown
    from detkd.experiments.pool import check_jobs

    check_jobs(args.jobs)
    plan = plan_ablation(args.config, seeds=args.seeds, out_dir=args.out, rows=names(args.rows) or None,
                         terms=names(args.terms), split=args.split, overrides=args.overrides,
                         variants=args.variant)
    summary = run_ablation(plan, jobs=args.jobs)
    print(table4_markdown(summary))
    print(table5_markdown(summary))
    print(f"outputs in {os.path.abspath(plan.out_dir)}")
    return 0
