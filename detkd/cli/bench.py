"""``detkd bench``: the speed of the detectors that configs describe, as a table (or CSV, JSON, plot)."""

from __future__ import annotations

import argparse
import logging

from detkd.errors import DetkdError

log = logging.getLogger("detkd")

HELP = """\
Measure the inference speed of the Faster R-CNN each CONFIG describes: parameters, GFLOPs per
image, latency at batch 1, images per second at batch 1 and batch 8, and peak memory of a
batch-1 forward. Latency is timed for all models together in --rounds interleaved rounds: each
round visits the models in an order rotated from round to round and then in its reverse
(A B B A), ceil(--runs / 2) timed forwards a visit (after --warmup untimed forwards each), so that
a drift of a busy machine hits every model alike. A model's latency
is the median over rounds (with the interquartile range, IQR, and the p90 of every forward), each
speed-up the median over rounds of the per-round ratio to its reference (with its IQR); a row
whose IQR exceeds 15 % of its value is marked "noisy: machine busy?". Every model gets
the same deterministic random image of --input size (default 480x640, VOC-like 3:4) and resizes it
itself to its model.min_size / model.max_size; the table shows the resized input. The last
column is the speed-up over the reference: the teacher of a distillation config, else the first row.

weights and counts:
  Without --checkpoint a model is untrained (model.checkpoint, model.weights and
  model.weights_backbone of the config are ignored: nothing is read or downloaded). An untrained
  model keeps a random number of proposals and detections, so by default its counts are held:
  exactly rpn.post_nms_top_n_test proposals and roi.detections_per_img detections an image (NMS
  still runs and is timed). With --checkpoint the model's own counts are used; --hold forces
  held counts anyway, --no-hold leaves an untrained model's counts free. --checkpoint values pair
  with the CONFIGs in order (fewer: the rest untrained). A distillation config (one with a
  `teacher:` section) gives two rows: its teacher (teacher.config, with teacher.checkpoint when
  that file exists) and the student (the config itself, paired with --checkpoint).

numbers:
  GFLOPs: torch's FlopCounterMode, a multiply-add counted as 2 FLOPs; RoIAlign, NMS and the
  resize are not counted. Peak MB: on CUDA the most memory allocated (weights included); on CPU
  the peak resident memory of the whole process (Linux; "-" elsewhere). On a machine with other
  load, CPU timings vary: compare rows of one run. --threads sets torch's CPU threads (default:
  torch's own); with other processes busy, fewer threads than cores is often much faster.
  --results pairs `detkd eval CONFIG --checkpoint CKPT --json` outputs with the CONFIGs (for a
  distillation config: its student) and adds AP50 (voc.mAP) and mAP (coco.AP) columns.
  --profile adds a table of the time and GFLOPs of each stage of a forward (transform, backbone,
  fpn, rpn_head, rpn_proposals, roi_align, box_head, postprocess), models side by side.

examples:
  detkd bench configs/voc/teacher_r50.yaml configs/voc/student_r50_half.yaml --threads 2 --profile
  detkd bench configs/synth/teacher.yaml configs/synth/student_small.yaml --rounds 11 --csv speed.csv
  detkd bench configs/synth/distill_lowres.yaml --checkpoint runs/synth/distill_lowres/best.pt
  detkd bench configs/bccd/teacher.yaml --sizes 240,320,480 --json > sweep.json
  detkd bench configs/voc/teacher_r50.yaml --device cuda --amp fp16 --runs 50 --warmup 10
  detkd bench configs/synth/teacher.yaml configs/synth/student_lowres.yaml \\
      --checkpoint runs/synth/teacher/best.pt runs/synth/student_lowres/best.pt \\
      --results teacher_eval.json student_eval.json --plot speed_accuracy.png"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="inference speed of the configs' detectors (latency, img/s, memory, GFLOPs, stages)",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config files (training or distillation)")
    parser.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH",
                        help="checkpoints, paired with the CONFIGs in order (default: untrained)")
    parser.add_argument("--sizes", type=parse_sizes, metavar="256,512,800",
                        help="sweep model.min_size over these (max_size scaled with it; default: each config's own)")
    parser.add_argument("--input", type=parse_hw, default=(480, 640), metavar="HxW",
                        help="raw benchmark image size before each model's resize (default: 480x640)")
    parser.add_argument("--device", default="cpu", metavar="cpu|cuda", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's own)")
    parser.add_argument("--rounds", type=int, default=7, metavar="R", help="interleaved rounds (default: 7)")
    parser.add_argument("--runs", type=int, default=3, metavar="N",
                        help="timed batch-1 forwards of each model a round, rounded up to even when there are two or more models (default: 3)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed forwards first (default: 2)")
    parser.add_argument("--batch-runs", type=int, metavar="N",
                        help="timed batches of 8 images (default: max(2, runs * rounds // 4); 0: skip)")
    parser.add_argument("--amp", choices=("fp16", "bf16"), help="autocast to this precision (CUDA only)")
    parser.add_argument("--hold", action=argparse.BooleanOptionalAction, default=None,
                        help="hold proposal/detection counts (default: held for untrained models only)")
    parser.add_argument("--profile", action="store_true", help="also print the stage profile of every model")
    parser.add_argument("--results", nargs="+", default=[], metavar="EVAL.json",
                        help="`detkd eval --json` metrics, paired with the CONFIGs in order (AP50, mAP columns)")
    parser.add_argument("--json", action="store_true", help="print only the rows as a JSON list on stdout")
    parser.add_argument("--out-json", metavar="OUT.json", help="also write the rows as JSON to this file")
    parser.add_argument("--csv", metavar="OUT.csv", help="also write the rows as CSV to this file")
    parser.add_argument("--plot", metavar="OUT.png", help="write a latency / AP50 plot (needs --results)")
    parser.set_defaults(func=run)


def parse_sizes(text: str) -> list[int]:
    """``"256,512,800"`` -> ``[256, 512, 800]`` (positive integers)."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixel sizes like 256,512,800, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def parse_hw(text: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)``: height x width."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit() or int(h) < 1 or int(w) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 480x640, got {text!r}")
    return int(h), int(w)


def run(args: argparse.Namespace) -> int:
    from detkd.bench.profile import format_profiles
    from detkd.bench.report import format_csv, format_json, format_table, mode_lines, plot_speed_accuracy, write_text
    from detkd.bench.runner import BenchOptions, bench_configs

    if args.plot and not args.results:
        raise DetkdError(f"--plot {args.plot}: needs accuracy: pass --results EVAL.json for the CONFIGs")
    options = BenchOptions(device=args.device, threads=args.threads, runs=args.runs, rounds=args.rounds, warmup=args.warmup,
                           batch_runs=args.batch_runs, input_hw=args.input, amp=args.amp, hold=args.hold,
                           profile=args.profile)
    report = bench_configs(args.configs, args.checkpoint, args.results, args.sizes, options)
    rows = report.rows
    if args.json:
        print(format_json(rows), end="")
    else:
        print("\n".join([*mode_lines(rows), "", format_table(rows)]))
        if report.profiles:
            print("\n" + format_profiles(report.profiles))
    for path, text in ((args.out_json, format_json(rows)), (args.csv, format_csv(rows))):
        if path:
            write_text(path, text)
            log.info("wrote %s", path)
    if args.plot:
        plot_speed_accuracy(rows, args.plot)
        log.info("wrote %s", args.plot)
    return 0
