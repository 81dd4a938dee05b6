"""The demo's report: ``summary.json``, ``report.md`` and its figures, from the trained cells and
their benchmark rows.

``summary.json`` holds, per model (``teacher``, ``student_small``, ``student_small_kd``,
``student_lowres``, ``student_lowres_kd``), its ``ap50`` (VOC all-point AP at IoU 0.5),
``map`` (COCO AP@[.5:.95]), ``latency_ms`` (median over interleaved rounds, batch 1) with
``latency_ms_iqr``, ``speedup`` over the teacher (median of the per-round ratios) with
``speedup_iqr``, ``gflops`` and ``params``; the distilled ones also ``gain_ap50`` (over their
baseline) and ``gap_closed`` (the share of the teacher-baseline AP50 gap closed,
:func:`detkd.experiments.stats.gap_closed`); then ``wall_s``, the demo's own wall time, and
``teacher_source``: ``bundled``, ``trained`` or the checkpoint given, and ``transfer_sets``:
``{model: what its transfer set was}`` for the models that learned from one (``data.unlabeled``).
The model list and which
model is whose baseline come from the caller (:mod:`detkd.experiments.demo`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import yaml

from detkd.bench.report import row_dict
from detkd.bench.runner import BenchOptions, BenchTarget, Entry, bench_entries
from detkd.config import load_any_config, load_config
from detkd.data.from_config import load_split
from detkd.doctor.report import terms_table
from detkd.experiments import figures as F
from detkd.experiments.runner import AP50_METRIC, MAP_METRIC, CellResult
from detkd.experiments.stats import gain, gap_closed
from detkd.utils.formatting import markdown_table, num, pct
from detkd.utils.io import atomic_write

DETECTION_IMAGES, DETECTION_SCORE = 3, 0.3  # the detections figure


def model_summary(result: CellResult, bench: Mapping[str, Any]) -> dict[str, Any]:
    """One model's entry of ``summary.json``."""
    return {
        "ap50": result.metric(AP50_METRIC),
        "map": result.metric(MAP_METRIC),
        "latency_ms": bench.get("latency_ms"),
        "latency_ms_iqr": bench.get("latency_ms_iqr"),
        "speedup": bench.get("speedup"),
        "speedup_iqr": bench.get("speedup_iqr"),
        "noisy": bench.get("noisy"),
        "gflops": bench.get("gflops"),
        "params": bench.get("params"),
        "min_size": bench.get("min_size"),
        "train_s": round(result.train_seconds, 1),
    }


def build_summary(results: Mapping[str, CellResult], bench: Mapping[str, Mapping[str, Any]],
                  wall_s: float, baselines: Mapping[str, str], teacher_source: str = "trained") -> dict[str, Any]:
    """``summary.json``: per model its scores and speed; gains and gap closed for the distilled
    ones (``baselines``: ``{distilled: baseline}``)."""
    summary: dict[str, Any] = {name: model_summary(result, bench.get(name, {})) for name, result in results.items()}
    teacher = summary.get("teacher", {})
    for name, base_name in baselines.items():
        if name not in summary or base_name not in summary:
            continue
        entry, base = summary[name], summary[base_name]
        entry["gain_ap50"] = gain(entry["ap50"], base["ap50"])
        entry["gap_closed"] = gap_closed(entry["ap50"], base["ap50"], teacher.get("ap50"))
    summary["wall_s"] = round(wall_s, 1)
    summary["resumed"] = any(r.reused for r in results.values())
    summary["teacher_source"] = teacher_source
    summary["transfer_sets"] = {name: t for name, r in results.items() if (t := transfer_set(r.run_dir))}
    return summary


def write_summary(out_dir: str, summary: Mapping[str, Any]) -> str:
    path = os.path.join(out_dir, "summary.json")
    with atomic_write(path) as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return path


def bench_models(results: Mapping[str, CellResult], configs: Mapping[str, str], rounds: int = 7,
                 runs: int = 3) -> dict[str, dict[str, Any]]:
    """Latency, FLOPs and parameters of each trained model (its own proposal counts), all timed
    together in interleaved rounds, speed-ups against the first (the teacher):
    ``{name: bench row as a dict}``."""
    options = BenchOptions(runs=runs, rounds=rounds, warmup=2, batch_runs=2)
    entries = [Entry(BenchTarget(name, configs[name], load_any_config(configs[name]).model, None, result.checkpoint),
                     None, 0) for name, result in results.items()]
    report = bench_entries(entries, options)
    return {row.name: row_dict(row) for row in report.rows}


def write_report(out_dir: str, config_dir: str, seed: int, results: Mapping[str, CellResult],
                 bench: Mapping[str, Mapping[str, Any]], wall_s: float, models: Sequence[str],
                 baselines: Mapping[str, str], teacher_source: str = "trained",
                 doctor: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``summary.json``, the figures and ``report.md`` in ``out_dir``; -> the summary. ``models``:
    the order of the tables; ``doctor``: ``detkd doctor`` reports of the distilled models."""
    summary = build_summary(results, bench, wall_s, baselines, teacher_source)
    write_summary(out_dir, summary)
    figures = draw_figures(out_dir, config_dir, results, summary)
    text = report_markdown(config_dir, seed, results, summary, bench, figures, models, baselines, doctor or {})
    with atomic_write(os.path.join(out_dir, "report.md")) as f:
        f.write(text)
    return summary


def draw_figures(out_dir: str, config_dir: str, results: Mapping[str, CellResult],
                 summary: Mapping[str, Any]) -> dict[str, str]:
    """The four PNGs of the report: ``{title: file name}``."""
    name = os.path.basename(os.path.normpath(config_dir))
    points = [F.ModelPoint(m, summary[m]["latency_ms"], summary[m]["ap50"], summary[m].get("speedup"))
              for m in results if summary[m].get("latency_ms")]
    out = {
        "Speed and accuracy": F.plot_speed_accuracy(points, os.path.join(out_dir, "speed_accuracy.png"),
                                                    f"{name}: AP50 against latency"),
        "AP50 per class": F.plot_per_class_ap(per_class_ap50(results), os.path.join(out_dir, "per_class_ap.png"),
                                              f"{name}: AP50 per class (test)"),
        "Training curves": F.plot_training_curves(
            {m: os.path.join(r.run_dir, "metrics.jsonl") for m, r in results.items() if m != "teacher"},
            os.path.join(out_dir, "training_curves.png"), f"{name}: students, baseline and distilled"),
        f"Detections (first {DETECTION_IMAGES} test images, scores >= {DETECTION_SCORE})":
            draw_detection_grid(out_dir, config_dir, results),
    }
    return {title: os.path.basename(path) for title, path in out.items()}


def per_class_ap50(results: Mapping[str, CellResult]) -> dict[str, dict[str, float | None]]:
    """``{model: {class: AP50}}`` on the test split (VOC all-point AP)."""
    return {m: dict(r.metrics.get("test", {}).get("voc", {}).get("per_class", {})) for m, r in results.items()}


def draw_detection_grid(out_dir: str, config_dir: str, results: Mapping[str, CellResult],
                        count: int = DETECTION_IMAGES, score_thresh: float = DETECTION_SCORE) -> str:
    """The first ``count`` test images: ground truth, then each model's detections above ``score_thresh``."""
    cfg = load_config(os.path.join(config_dir, "teacher.yaml"))
    index = load_split(cfg.data, train=False, classes=results["teacher"].classes or None)
    ids = [r.image_id for r in index.records[:count]]
    images, truth = F.images_and_ground_truth(index, ids)
    columns = {m: F.predictions_for_images(os.path.join(r.run_dir, "test_results.json"), index, ids)
               for m, r in results.items()}
    return F.detections_grid(images, columns, index.classes, os.path.join(out_dir, "detections.png"),
                             score_thresh=score_thresh, ground_truth=truth, max_side=320)


def summary_table(summary: Mapping[str, Any], models: Sequence[str], baselines: Mapping[str, str]) -> str:
    """The markdown table the demo ends with: accuracy, speed (with its spread over rounds) and
    what distillation won, then a line per distilled student."""
    header = ["model", "AP50", "mAP", "latency ms (IQR)", "speed-up (IQR)", "GFLOPs", "params (M)", "AP50 gain",
              "gap closed"]
    lines = markdown_table(header, [summary_row(m, summary[m]) for m in models if summary.get(m) is not None],
                           right_from=1)
    lines += ["", *[distillation_line(summary, m, baselines[m]) for m in models if m in baselines and m in summary]]
    return "\n".join(lines).rstrip()


def summary_row(model: str, e: Mapping[str, Any]) -> list[str]:
    """One model's cells of :func:`summary_table`."""
    params = None if e.get("params") is None else e["params"] / 1e6
    noisy = " (noisy: machine busy?)" if e.get("noisy") else ""
    latency = f"{num(e.get('latency_ms'), '.1f')} ({num(e.get('latency_ms_iqr'), '.1f')}){noisy}"
    speedup = f"{num(e.get('speedup'), '.2f')}x ({num(e.get('speedup_iqr'), '.2f')})"
    return [model, pct(e["ap50"]), pct(e["map"]), latency, speedup, num(e.get("gflops"), ".2f"), num(params, ".2f"),
            pct(e.get("gain_ap50"), signed=True), pct(e.get("gap_closed"), suffix="%")]


def distillation_line(summary: Mapping[str, Any], model: str, baseline: str) -> str:
    """``student_small_kd: distillation +4.1 AP50 (12.0 -> 16.1), 15 % of the gap, 2.9x faster than the teacher``."""
    e, b = summary[model], summary.get(baseline, {})
    gain_text, gap = pct(e.get("gain_ap50"), signed=True), pct(e.get("gap_closed"), 0, suffix=" %")
    return (f"- {model}: distillation {gain_text} AP50 ({pct(b.get('ap50'))} -> {pct(e.get('ap50'))}), {gap} of "
            f"the gap to the teacher, {num(e.get('speedup'), '.1f')}x faster than the teacher")


def per_class_table(results: Mapping[str, CellResult]) -> str:
    """AP50 per class (rows) and model (columns), in percent."""
    table = per_class_ap50(results)
    models = list(table)
    classes = list(next(iter(table.values()), {}))
    rows = [[c, *[pct(table[m].get(c)) for m in models]] for c in classes]
    return "\n".join(markdown_table(["class", *models], rows, right_from=1))


def doctor_section(doctor: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``detkd doctor`` on each distilled student (its last checkpoint): teacher, terms, verdicts."""
    if not doctor:
        return []

    lines = ["## The doctor on the distilled students", "",
             "`detkd doctor` at each distilled student's last checkpoint: how well the teacher does on the "
             "training images, and each term's share of the gradient per module.", ""]
    for model, report in doctor.items():
        t = report["teacher"]
        lines += [f"### {model}", "",
                  f"Teacher on {report['images']} training images: AP50 {pct(t['ap50'])}, positive RoIs right "
                  f"{pct(t['pos_acc'])} (P(true) {num(t['pos_p_true'], '.2f')}), RPN AUC {num(t['rpn_separation'], '.3f')}; "
                  f"{report['alignment']['pairing']}.", "", *terms_table(report["terms"]), "",
                  *[f"- {v['status']}: {v['message']}" for v in report["verdicts"] if v["status"] in ("warn", "bad")], ""]
    return lines


def run_config(run_dir: str) -> dict[str, Any] | None:
    """The ``config.yaml`` a run in ``run_dir`` wrote, as a dict; None for a model scored, not trained, here."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f) or {}


def transfer_set(run_dir: str) -> str | None:
    """The transfer set the run in ``run_dir`` learned from (``data.unlabeled``), in words; None without one."""
    section = ((run_config(run_dir) or {}).get("data") or {}).get("unlabeled") or {}
    source = (f"{section['synth_images']} more images of the generator (the first training images after the "
              "labelled ones: for the bundled teacher, images it was trained on)" if section.get("synth_images")
              else f"the images of split `{section['split']}`" if section.get("split")
              else f"the images in `{section['folder']}`" if section.get("folder") else None)
    if source is None:
        return None
    return (f"{source}, without their labels: the teacher's detections scoring >= {section['score_threshold']:g} are "
            f"their boxes; {100 * section['share']:.0f} % of each epoch's samples, the same number of steps")


def starts_from(run_dir: str) -> str:
    """Where the run in ``run_dir`` started, from its ``config.yaml``: the teacher's weights
    (``student.init: teacher``), the teacher's tensors that fit (``student.init: inherit``),
    ``model.checkpoint``'s file name (all of it, or the tensors that fit:
    ``model.checkpoint_matching``), ``model.weights``, or "random weights"; "-" for a model
    scored, not trained, here."""
    cfg = run_config(run_dir)
    if cfg is None:
        return "-"
    model = cfg.get("model", {})
    init = (cfg.get("student") or {}).get("init")
    teacher = os.path.basename((cfg.get("teacher") or {}).get("checkpoint") or "")
    if init == "teacher":
        return f"the teacher's weights (`{teacher}`)"
    if init == "inherit":
        return f"the teacher's tensors that fit (`{teacher}`), the rest random"
    if model.get("checkpoint"):
        fitting = " (the tensors that fit, the rest random)" if model.get("checkpoint_matching") else ""
        return f"`{os.path.basename(model['checkpoint'])}`{fitting}"
    return f"`{model['weights']}`" if model.get("weights") else "random weights"


def report_markdown(config_dir: str, seed: int, results: Mapping[str, CellResult], summary: Mapping[str, Any],
                    bench: Mapping[str, Mapping[str, Any]], figures: Mapping[str, str], models: Sequence[str],
                    baselines: Mapping[str, str], doctor: Mapping[str, Mapping[str, Any]]) -> str:
    """``report.md``: what ran, the tables, the figures, how to run it again."""
    teacher_bench = bench.get("teacher", {})
    source = {"bundled": "the bundled teacher (detkd/assets/demo_teacher.pt), not trained here",
              "trained": "trained here from teacher.yaml"}.get(summary["teacher_source"], f"`{summary['teacher_source']}`")
    parts = [
        f"# detkd demo: `{config_dir}`, seed {seed}",
        "",
        f"Wall time {summary['wall_s']:.0f} s{' (over several runs: resumed)' if summary['resumed'] else ''} "
        f"with {torch.get_num_threads()} CPU thread(s) (torch {torch.__version__}); "
        f"reproduce with `detkd demo --data {config_dir} --seed {seed}`.",
        f"Teacher: {source}.",
        *[f"Transfer set of {m}: {text} (its baseline learns from the labelled images only)."
          for m, text in summary.get("transfer_sets", {}).items()],
        "AP50: PASCAL VOC all-point AP at IoU 0.5; mAP: COCO AP@[.5:.95] (pycocotools); both on the "
        "students' test split, from each model's last checkpoint. Latency: batch 1 on "
        f"{teacher_bench.get('device', 'cpu')} with {teacher_bench.get('threads', '-')} thread(s), each model at its "
        f"own input size with its own proposal counts, {teacher_bench.get('warmup', '-')} warm-up runs, then "
        f"{teacher_bench.get('rounds', '-')} interleaved rounds of {teacher_bench.get('runs', '-')} runs (every model "
        "once a round, order rotated): the median over rounds and its interquartile range; a speed-up is the "
        "median over rounds of the per-round ratio to the teacher. Gain and gap closed: the distilled "
        "student against its baseline; gap closed = (distilled - baseline) / (teacher - baseline) in AP50.",
        "",
        "## Summary",
        "",
        summary_table(summary, models, baselines),
        "",
        *doctor_section(doctor),
        "## Models",
        "",
        *markdown_table(["model", "config", "input", "starts from", "train time"],
                        [[m, f"`{results[m].run_dir}` ({r.get('config', '')})", r.get("input_hw", "-"),
                          starts_from(results[m].run_dir), f"{results[m].train_seconds:.0f} s"]
                         for m, r in bench.items() if m in results], right_from=4),
        "",
        "## AP50 per class (test)",
        "",
        per_class_table(results),
        "",
        "## Figures",
        "",
        *[f"### {title}\n\n![{title}]({path})\n" for title, path in figures.items()],
    ]
    return "\n".join(parts) + "\n"
