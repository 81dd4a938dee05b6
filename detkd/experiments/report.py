"""The demo's report: ``summary.json``, ``report.md`` and its figures, from the trained cells and
their benchmark rows.

``summary.json`` holds, per model (``teacher``, ``student_small``, ``student_small_kd``,
``student_lowres``, ``student_lowres_kd``), its ``ap50`` (VOC all-point AP at IoU 0.5),
``map`` (COCO AP@[.5:.95]), ``latency_ms`` (median, batch 1), ``gflops`` and ``params``; the
distilled ones also ``gain_ap50`` (over their baseline) and ``gap_closed`` (the share of the
teacher-baseline AP50 gap closed, :func:`detkd.experiments.stats.gap_closed`); and ``wall_s``,
the demo's own wall time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from detkd.experiments.runner import AP50_METRIC, MAP_METRIC, CellResult
from detkd.experiments.stats import gain, gap_closed
from detkd.utils.io import atomic_write

DETECTION_IMAGES, DETECTION_SCORE = 3, 0.3  # the detections figure
BASELINE_OF = {"student_small_kd": "student_small", "student_lowres_kd": "student_lowres"}


def model_summary(result: CellResult, bench: Mapping[str, Any]) -> dict[str, Any]:
    """One model's entry of ``summary.json``."""
    return {
        "ap50": result.metric(AP50_METRIC),
        "map": result.metric(MAP_METRIC),
        "latency_ms": bench.get("latency_ms"),
        "gflops": bench.get("gflops"),
        "params": bench.get("params"),
        "min_size": bench.get("min_size"),
        "train_s": round(result.train_seconds, 1),
    }


def build_summary(results: Mapping[str, CellResult], bench: Mapping[str, Mapping[str, Any]],
                  wall_s: float) -> dict[str, Any]:
    """``summary.json``: per model its scores and speed; gains and gap closed for the ``_kd`` ones."""
    summary: dict[str, Any] = {name: model_summary(result, bench.get(name, {})) for name, result in results.items()}
    teacher = summary.get("teacher", {})
    for name, base_name in BASELINE_OF.items():
        if name not in summary or base_name not in summary:
            continue
        entry, base = summary[name], summary[base_name]
        entry["gain_ap50"] = gain(entry["ap50"], base["ap50"])
        entry["gap_closed"] = gap_closed(entry["ap50"], base["ap50"], teacher.get("ap50"))
    for entry in summary.values():
        if teacher.get("latency_ms") and entry.get("latency_ms"):
            entry["speedup"] = teacher["latency_ms"] / entry["latency_ms"]
    summary["wall_s"] = round(wall_s, 1)
    summary["resumed"] = any(r.reused for r in results.values())
    return summary


def write_summary(out_dir: str, summary: Mapping[str, Any]) -> str:
    path = os.path.join(out_dir, "summary.json")
    with atomic_write(path) as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return path


def bench_models(results: Mapping[str, CellResult], configs: Mapping[str, str],
                 runs: int = 10) -> dict[str, dict[str, Any]]:
    """Latency, FLOPs and parameters of each trained model (its own proposal counts), one
    process, one after the other: ``{name: bench row as a dict}``."""
    from detkd.bench.report import row_dict
    from detkd.bench.runner import BenchOptions, bench_model
    from detkd.config import load_any_config

    options = BenchOptions(runs=runs, warmup=2, batch_runs=2)
    rows = {}
    for name, result in results.items():
        model_cfg = load_any_config(configs[name]).model
        row = bench_model(model_cfg, None, name, checkpoint=result.checkpoint, options=options, config=configs[name])
        rows[name] = row_dict(row)
    return rows


def write_report(out_dir: str, config_dir: str, seed: int, results: Mapping[str, CellResult],
                 bench: Mapping[str, Mapping[str, Any]], wall_s: float) -> dict[str, Any]:
    """``summary.json``, the figures and ``report.md`` in ``out_dir``; -> the summary."""
    summary = build_summary(results, bench, wall_s)
    write_summary(out_dir, summary)
    figures = draw_figures(out_dir, config_dir, results, summary)
    text = report_markdown(config_dir, seed, results, summary, bench, figures)
    with atomic_write(os.path.join(out_dir, "report.md")) as f:
        f.write(text)
    return summary


def draw_figures(out_dir: str, config_dir: str, results: Mapping[str, CellResult],
                 summary: Mapping[str, Any]) -> dict[str, str]:
    """The four PNGs of the report: ``{title: file name}``."""
    from detkd.experiments import figures as F

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
    from detkd.config import load_config
    from detkd.engine.data import load_split
    from detkd.experiments import figures as F

    cfg = load_config(os.path.join(config_dir, "teacher.yaml"))
    index = load_split(cfg.data, train=False, classes=results["teacher"].classes or None)
    ids = [r.image_id for r in index.records[:count]]
    images, truth = F.images_and_ground_truth(index, ids)
    columns = {m: F.predictions_for_images(os.path.join(r.run_dir, "test_results.json"), index, ids)
               for m, r in results.items()}
    return F.detections_grid(images, columns, index.classes, os.path.join(out_dir, "detections.png"),
                             score_thresh=score_thresh, ground_truth=truth, max_side=320)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(summary: Mapping[str, Any], models: Sequence[str]) -> str:
    """The markdown table the demo ends with: accuracy, speed and what distillation won."""
    lines = ["| model | AP50 | mAP | latency ms | speed-up | GFLOPs | params (M) | AP50 gain | gap closed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in models:
        e = summary.get(m)
        if e is None:
            continue
        gain_text = "-" if e.get("gain_ap50") is None else f"{100 * e['gain_ap50']:+.1f}"
        params = None if e.get("params") is None else e["params"] / 1e6
        lines.append(f"| {m} | {_pct(e['ap50'])} | {_pct(e['map'])} | {_num(e.get('latency_ms'), '.1f')} | "
                     f"{_num(e.get('speedup'), '.2f')}x | {_num(e.get('gflops'), '.2f')} | {_num(params, '.2f')} | "
                     f"{gain_text} | {_pct(e.get('gap_closed'))}{'%' if e.get('gap_closed') is not None else ''} |")
    return "\n".join(lines)


def per_class_table(results: Mapping[str, CellResult]) -> str:
    """AP50 per class (rows) and model (columns), in percent."""
    table = per_class_ap50(results)
    models = list(table)
    classes = list(next(iter(table.values()), {}))
    lines = ["| class | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    lines += [f"| {c} | " + " | ".join(_pct(table[m].get(c)) for m in models) + " |" for c in classes]
    return "\n".join(lines)


def report_markdown(config_dir: str, seed: int, results: Mapping[str, CellResult], summary: Mapping[str, Any],
                    bench: Mapping[str, Mapping[str, Any]], figures: Mapping[str, str]) -> str:
    """``report.md``: what ran, the tables, the figures, how to run it again."""
    import torch

    from detkd.experiments.demo import MODELS

    teacher_bench = bench.get("teacher", {})
    parts = [
        f"# detkd demo: `{config_dir}`, seed {seed}",
        "",
        f"Wall time {summary['wall_s']:.0f} s{' (over several runs: resumed)' if summary['resumed'] else ''} "
        f"with {torch.get_num_threads()} CPU thread(s) (torch {torch.__version__}); "
        f"reproduce with `detkd demo --data {config_dir} --seed {seed}`.",
        "AP50: PASCAL VOC all-point AP at IoU 0.5; mAP: COCO AP@[.5:.95] (pycocotools); both on the "
        "test split, from each model's last checkpoint. Latency: median of a batch-1 forward on "
        f"{teacher_bench.get('device', 'cpu')}, each model at its own input size, with its own "
        "proposal counts. Gain and gap closed: the distilled student against its baseline; "
        "gap closed = (distilled - baseline) / (teacher - baseline) in AP50.",
        "",
        "## Summary",
        "",
        summary_table(summary, [m.name for m in MODELS]),
        "",
        "## Models",
        "",
        "| model | config | input | train time |",
        "|---|---|---|---:|",
        *[f"| {m} | `{results[m].run_dir}` ({r.get('config', '')}) | {r.get('input_hw', '-')} | "
          f"{results[m].train_seconds:.0f} s |" for m, r in bench.items() if m in results],
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
