"""The doctor's report as text (terminal and ``doctor.md``) and as a figure (``doctor.png``:
each module's gradient shared out among the terms, as stacked bars)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detkd.distill.balance import MODULES
from detkd.doctor.advice import num, pct
from detkd.utils.formatting import MISSING, markdown_table

STATUS = {"ok": "ok  ", "info": "info", "warn": "WARN", "bad": "BAD "}


def report_markdown(report: Mapping[str, Any]) -> str:
    """The whole report in markdown (the terminal prints the same text)."""
    t, a = report["teacher"], report["alignment"]
    lines = [f"# detkd doctor: {report.get('config') or 'distillation config'}", "",
             f"{report['batches']} batches, {report['images']} training images (no augmentation)"
             + (f"; student from {report['student']}" if report.get("student") else "; student as configured"), "",
             "## Teacher on the sampled images", "", *teacher_table(t), "",
             "## Alignment", "", a["pairing"], "",
             f"- sampled student anchors with a teacher anchor: {pct(a['anchor_match_share'])}",
             f"- ground truth scored through the mapping vs in the teacher's own frame: gap {num(a['mapped_gt_score_gap'])}"
             f" (RPN {num(a['rpn_gt_score_gap'])}, RoI {num(a['roi_gt_score_gap'])}; anchor IoU {num(a['rpn_anchor_iou'])})",
             "", "## Terms", "", *terms_table(report["terms"]), "", gradient_line(report), ""]
    shares = report.get("hint", {}).get("constant_share") or {}
    if shares:
        lines += ["Share of each hinted teacher level's variance that is a per-channel constant: "
                  + ", ".join(f"{k} {pct(v)}" for k, v in shares.items()), ""]
    lines += ["## Verdicts", "", *[f"- **{v['status']}** ({v['check']}): {v['message']}" for v in report["verdicts"]], ""]
    lines += ["## Advice", ""]
    lines += [f"{i}. `{x['key']}`: {x['suggestion']} (because {x['evidence']})" for i, x in enumerate(report["advice"], 1)]
    if not report["advice"]:
        lines.append("None: no measurement crossed a threshold (detkd/doctor/advice.py THRESHOLDS).")
    return "\n".join(lines) + "\n"


def teacher_table(t: Mapping[str, Any]) -> list[str]:
    """How the teacher does on the sampled images, a measure a row."""
    return markdown_table(["measure", "value"], [
        ["AP50 (VOC, all-point)", pct(t["ap50"])],
        [f"positive RoIs ({t['positive_rois']}): mean P(true class)", num(t["pos_p_true"])],
        ["positive RoIs: argmax is the true class", pct(t["pos_acc"])],
        ["positive RoIs: argmax is background", pct(t["pos_argmax_bg"])],
        [f"negative RoIs ({t['negative_rois']}): mean P(background)", num(t["neg_p_bg"])],
        ["RPN objectness AUC, positive vs negative anchors", num(t["rpn_separation"])],
        ["student's best P(true) on positives under this objective (w0 = 1)",
         f"{num(t['pos_optimum_p_true'])} ({num(t['pos_optimum_p_true_w1'])})"],
    ], right_from=1)


def gradient_line(report: Mapping[str, Any]) -> str:
    grad = report.get("gradient") or {}
    clip = grad.get("clip_grad_norm")
    return (f"Total gradient norm (median over batches): {num(grad.get('total_norm'))}; train.clip_grad_norm: "
            f"{clip if clip is not None else 'off'}.")


def terms_table(terms: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Raw and weighted values and each module's gradient share, a row a term."""
    header = ["term", "raw", "weight", "weighted", *[f"{m} share" for m in MODULES]]
    rows = [[name, f"{e['raw']:.4f}", f"{e['weight']:.3g}", f"{e['weighted']:.4f}",
             *[pct(e["grad_share"].get(m)) if e["grad_share"].get(m) else MISSING for m in MODULES]]
            for name, e in terms.items()]
    return markdown_table(header, rows, right_from=1)


def report_text(report: Mapping[str, Any]) -> str:
    """The terminal version: the markdown, with status tags instead of bold."""
    text = report_markdown(report)
    for status, tag in STATUS.items():
        text = text.replace(f"- **{status}**", f"[{tag}]")
    return text


def plot_shares(report: Mapping[str, Any], path: str) -> str:
    """``doctor.png``: per module a stacked bar of the terms' gradient shares; -> ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    terms = report["terms"]
    fig = Figure(figsize=(8, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left = [0.0] * len(MODULES)
    for name, entry in terms.items():
        widths = [entry["grad_share"].get(m) or 0.0 for m in MODULES]
        hatch = None if name.startswith("distill_") else "//"
        ax.barh(range(len(MODULES)), widths, left=left, label=name, hatch=hatch, edgecolor="white")
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(range(len(MODULES)), MODULES)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the module's gradient norm (hatched: detection losses)")
    ax.set_title("detkd doctor: which term drives each module")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    return path
