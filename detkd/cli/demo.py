"""``detkd demo``: teacher, baselines and distilled students trained, scored, timed and reported."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger("detkd")

HELP = """\
The whole method in one command, on the embedded dataset by default: generate the data, take
the teacher (the one bundled with detkd, trained on the embedded dataset and checked against its
SHA-256 before use: as in real use, the teacher is given), train two baseline students (a
smaller architecture, `student_small`; the teacher's architecture at half the input resolution,
`student_lowres`), distil both from the teacher, evaluate all five on the test split, time them
together (`detkd bench`, interleaved rounds), run `detkd doctor` on the distilled students and
write a report. The README gives its wall time on 2 CPU cores for the embedded dataset.

the teacher:
  default          the bundled teacher when the folder's teacher.yaml is the model it was
                   trained as (configs/synth); for other data (configs/bccd) teacher.yaml is
                   trained first
  --teacher CKPT   learn from this checkpoint of teacher.yaml's model instead (scored, not
                   trained)
  --train-teacher  train teacher.yaml here, from scratch (for configs/synth: the bundled
                   teacher's own recipe, hours on 2 CPU cores), and report its time

The report folder (printed at the end) holds report.md (the tables: AP50, mAP@[.5:.95], AP50
per class, latency, FLOPs, parameters, speed-up over the teacher, the gain of distillation over
each baseline and the share of the teacher-baseline gap it closed), speed_accuracy.png,
per_class_ap.png, training_curves.png, detections.png (test images: ground truth and each
model's detections), summary.json, and runs/<model>/ (each model's run folder).

The four students train two at a time, one thread each, where there are two cores or more
(--jobs 1: one after the other, with all threads); each one's log is then in
runs/<model>/log.txt, and the terminal shows every 30 s the latest line of each running one
and says when each ends.

A demo that is stopped resumes when started again with the same arguments: finished models are
read back, the model in training continues from its last checkpoint.

--data CONFIG_DIR runs the same on another dataset: the folder must hold teacher.yaml,
student_small.yaml, student_lowres.yaml, distill_small.yaml and distill_lowres.yaml (see
configs/synth and configs/bccd).

examples:
  detkd demo
  detkd demo --data configs/bccd --out runs/demo-bccd
  detkd demo --data configs/bccd --teacher runs/bccd/teacher/last.pt
  detkd demo --seed 1 --out runs/demo-seed1"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="teacher, baselines and distilled students side by side (report)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="CONFIG_DIR", default="configs/synth",
                        help="the folder of the five configs (default: configs/synth, the embedded dataset)")
    parser.add_argument("--out", metavar="DIR", help="the report folder (default: runs/demo, or "
                        "runs/demo-<folder> for another --data; -seedS added for --seed S other than 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every model's training (default 0)")
    parser.add_argument("--train-teacher", action="store_true",
                        help="train the teacher here from teacher.yaml instead of using the bundled one")
    parser.add_argument("--teacher", metavar="CKPT", help="a trained checkpoint of teacher.yaml's model to learn from")
    parser.add_argument("--jobs", type=int, metavar="N", help="students trained at the same time, torch's threads "
                        "shared among them (default: 2 with two cores or more, else 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.experiments.demo import MODELS, baselines, default_out_dir, run_demo
    from detkd.experiments.pool import check_jobs, default_jobs
    from detkd.experiments.report import summary_table

    out = args.out or default_out_dir(args.data, args.seed)
    jobs = check_jobs(args.jobs) if args.jobs is not None else default_jobs(len(MODELS) - 1)
    summary = run_demo(args.data, out, args.seed, teacher=args.teacher, train_teacher=args.train_teacher, jobs=jobs)
    print(f"\ndemo wall time {summary['wall_s']:.0f} s, teacher: {summary['teacher_source']}\n")
    print(summary_table(summary, [m.name for m in MODELS], baselines()))
    print(f"\nreport: {os.path.join(out, 'report.md')}")
    return 0

