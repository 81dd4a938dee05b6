"""The PNG figures of the demo report.

- :func:`plot_speed_accuracy`: latency against AP50 of the five models, with an arrow from each
  baseline student to its distilled version;
- :func:`plot_per_class_ap`: AP50 per class, one bar per model;
- :func:`plot_training_curves`: the detection loss (the four torchvision terms, unweighted, so
  that baseline and distilled students compare on the same quantity) and the total training
  loss against the step, from the runs' ``metrics.jsonl``;
- :func:`detections_grid`: images (rows) with each model's detections (columns), drawn by
  :func:`draw_detections`; :func:`predictions_for_images` and :func:`images_and_ground_truth`
  fetch what it draws.

Scores (``ap50``, per-class AP) are fractions in ``[0, 1]``, as the evaluators return them; the
figures show them in %. Every model keeps its colour across figures (:data:`MODEL_STYLES`):
baselines light and dashed, distilled students dark and solid. The plots use matplotlib's Agg
canvas directly (no pyplot, no global state); every function returns the path it wrote.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from detkd.data.dataset import DatasetIndex
from detkd.data.images import read_rgb
from detkd.errors import DataError, DetkdError
from detkd.evaluation.results import load_results

DPI = 120
DETECTION_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
DISTILLED_FROM = {"student_small_kd": "student_small", "student_lowres_kd": "student_lowres"}


@dataclass(frozen=True)
class ModelStyle:
    """How one model is drawn in every figure."""

    color: str
    linestyle: str
    marker: str


MODEL_STYLES: dict[str, ModelStyle] = {
    "teacher": ModelStyle("#252525", "-", "*"),
    "student_small": ModelStyle("#6baed6", "--", "o"),
    "student_small_kd": ModelStyle("#08519c", "-", "o"),
    "student_lowres": ModelStyle("#fd8d3c", "--", "s"),
    "student_lowres_kd": ModelStyle("#a63603", "-", "s"),
}
_FALLBACK_COLORS = ("#2ca02c", "#9467bd", "#e377c2", "#17becf", "#bcbd22", "#8c564b")

# One RGB colour per class (label k uses entry (k - 1) mod 10): distinct, readable on photos.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


@dataclass(frozen=True)
class ModelPoint:
    """One model of the speed-accuracy plot: ``ap50`` a fraction in [0, 1] (None: not scored),
    ``speedup`` the teacher's latency over this model's (optional, shown in the label)."""

    name: str
    latency_ms: float
    ap50: float | None
    speedup: float | None = None


def model_style(name: str) -> ModelStyle:
    """The style of a model; a name outside :data:`MODEL_STYLES` gets a stable fallback colour."""
    if name in MODEL_STYLES:
        return MODEL_STYLES[name]
    color = _FALLBACK_COLORS[sum(map(ord, name)) % len(_FALLBACK_COLORS)]
    return ModelStyle(color, "-" if name.endswith("_kd") else "--", "D")


# -- shared plumbing ---------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str) -> str:
    """Write ``fig`` as a PNG (creating the folder); a DetkdError naming the file if it cannot."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
        fig.savefig(out_png, dpi=DPI, format="png")
    except OSError as e:
        raise DetkdError(f"{out_png}: cannot write the figure: {e.strerror or e}") from None
    finally:
        fig.clear()
    return out_png


def is_informative_png(path: str) -> bool:
    """True when ``path`` decodes as an image that is not a single uniform colour."""
    import matplotlib.image as mpimg

    try:
        pixels = np.asarray(mpimg.imread(path))
    except (OSError, ValueError, SyntaxError):
        return False
    if pixels.size == 0:
        return False
    flat = pixels.reshape(-1, pixels.shape[-1]) if pixels.ndim == 3 else pixels.reshape(-1, 1)
    return bool(np.any(flat != flat[0]))


# -- speed and accuracy --------------------------------------------------------------------------


def plot_speed_accuracy(points: Sequence[ModelPoint], out_png: str, title: str = "speed and accuracy") -> str:
    """Latency per image (x, ms; log scale past a 5x spread) against AP50 (y, %), one labelled
    marker per model and an arrow from each baseline to its distilled student, marked with the gain.

    Raises:
        DetkdError: no point has both a latency and an AP50, or the file cannot be written.
    """
    usable = [p for p in points if p.ap50 is not None and p.latency_ms and p.latency_ms > 0]
    if not usable:
        raise DetkdError(f"{out_png}: nothing to plot: no model has both a latency and an AP50")
    fig = _new_figure(7.0, 5.0)
    ax = fig.add_subplot()
    for p in usable:
        style = model_style(p.name)
        label = p.name + (f" ({p.speedup:.1f}x faster)" if p.speedup and p.name != "teacher" else "")
        ax.scatter([p.latency_ms], [100 * p.ap50], s=140 if p.name == "teacher" else 80, color=style.color,
                   marker=style.marker, edgecolors="black", linewidths=0.6, zorder=3, label=label)
        ax.annotate(p.name, (p.latency_ms, 100 * p.ap50), textcoords="offset points", xytext=(7, -12), fontsize=8)
    _gain_arrows(ax, {p.name: p for p in usable})
    latencies = [p.latency_ms for p in usable]
    if max(latencies) / min(latencies) > 5:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("latency per image (ms)")
    ax.set_ylabel("AP50 (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, out_png)


def _gain_arrows(ax: Axes, points: Mapping[str, ModelPoint]) -> None:
    """An arrow from each baseline to its distilled student, labelled ``+x.x AP50``."""
    for student, baseline in DISTILLED_FROM.items():
        if student not in points or baseline not in points:
            continue
        a, b = points[baseline], points[student]
        start, end = (a.latency_ms, 100 * a.ap50), (b.latency_ms, 100 * b.ap50)
        ax.annotate("", xy=end, xytext=start, zorder=2,
                    arrowprops={"arrowstyle": "-|>", "color": model_style(student).color, "lw": 1.5,
                                "shrinkA": 7, "shrinkB": 7})
        gain = end[1] - start[1]
        mid = (math.sqrt(start[0] * end[0]), (start[1] + end[1]) / 2)
        ax.annotate(f"{gain:+.1f} AP50", mid, textcoords="offset points", xytext=(8, 0), fontsize=8,
                    color=model_style(student).color, fontweight="bold")


# -- per-class AP --------------------------------------------------------------------------------


def plot_per_class_ap(per_class: Mapping[str, Mapping[str, float | None]], out_png: str,
                      title: str = "AP50 per class") -> str:
    """Grouped bars: one group per class, one bar per model (in the order of ``per_class``, which
    maps a model name to its ``{class: AP in [0, 1] or None}``); None is a missing bar marked n/a.

    Raises:
        DetkdError: ``per_class`` is empty or names no class, or the file cannot be written.
    """
    classes = list(dict.fromkeys(c for scores in per_class.values() for c in scores))
    if not per_class or not classes:
        raise DetkdError(f"{out_png}: nothing to plot: no per-class AP given")
    models = list(per_class)
    fig = _new_figure(max(6.0, 1.0 + 0.35 * len(classes) * len(models)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for m, name in enumerate(models):
        style = model_style(name)
        xs = [c + (m - (len(models) - 1) / 2) * width for c in range(len(classes))]
        values = [per_class[name].get(cls) for cls in classes]
        heights = [100 * v if v is not None else 0.0 for v in values]
        ax.bar(xs, heights, width, color=style.color, edgecolor="black", linewidth=0.4, label=name,
               hatch="//" if style.linestyle == "--" else None)
        for x, v in zip(xs, values):
            if v is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color="#555555")
    ax.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_ylim(0, 100)
    ax.set_ylabel("AP50 (%)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(models), 3), loc="upper right")
    fig.tight_layout()
    return _save(fig, out_png)


# -- training curves -----------------------------------------------------------------------------


def read_train_records(path: str) -> list[dict[str, Any]]:
    """The ``"type": "train"`` records of a ``metrics.jsonl``, sorted by step (other types skipped).

    Raises:
        DataError: the file is missing, unreadable, has a malformed line or no train record.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise DataError(path, "metrics file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the metrics file: {e}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON: {e.msg}", line=number) from None
        if isinstance(record, dict) and record.get("type") == "train" and isinstance(record.get("step"), (int, float)):
            records.append(record)
    if not records:
        raise DataError(path, "no training records (lines with \"type\": \"train\") in the metrics file")
    return sorted(records, key=lambda r: r["step"])


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (fewer at the start), same length as ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(x) == 0:
        return x
    csum = np.concatenate([[0.0], np.cumsum(x)])
    ends = np.arange(1, len(x) + 1)
    starts = np.maximum(ends - window, 0)
    return (csum[ends] - csum[starts]) / (ends - starts)


def _series(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, sum of keys)`` over the records holding all ``keys`` as finite numbers."""
    steps, values = [], []
    for r in records:
        terms = [r.get(k) for k in keys]
        if all(isinstance(t, (int, float)) and math.isfinite(t) for t in terms):
            steps.append(r["step"])
            values.append(float(sum(terms)))
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def _plot_curve(ax: Axes, name: str, steps: np.ndarray, values: np.ndarray) -> None:
    """The raw values faintly, their moving average (about 1/15 of the points) in the model's style."""
    style = model_style(name)
    if len(values) == 0:
        return
    ax.plot(steps, values, color=style.color, alpha=0.2, linewidth=0.8)
    smooth = moving_average(values, max(1, len(values) // 15))
    ax.plot(steps, smooth, color=style.color, linestyle=style.linestyle, linewidth=1.8, label=name)


def plot_training_curves(runs: Mapping[str, str], out_png: str, title: str = "training losses") -> str:
    """Two panels against the step, one line per model (``runs`` maps a model name to its
    ``metrics.jsonl``): the detection loss (the four torchvision terms, unweighted) and the total
    training loss ``loss`` (which, for distilled runs, includes the weighted distillation terms).

    Raises:
        DetkdError: a metrics file is missing, malformed or has no training record (naming it).
    """
    if not runs:
        raise DetkdError(f"{out_png}: nothing to plot: no run given")
    records = {name: read_train_records(path) for name, path in runs.items()}
    fig = _new_figure(11.0, 4.5)
    det_ax, total_ax = fig.subplots(1, 2)
    for name, recs in records.items():
        _plot_curve(det_ax, name, *_series(recs, DETECTION_TERMS))
        _plot_curve(total_ax, name, *_series(recs, ("loss",)))
    det_ax.set_title("detection loss (" + " + ".join(t.removeprefix("loss_") for t in DETECTION_TERMS) + ")", fontsize=9)
    total_ax.set_title("total training loss (with weighted distillation terms)", fontsize=9)
    for ax in (det_ax, total_ax):
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
            _log_if_spread(ax)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_png)


def _log_if_spread(ax: Axes) -> None:
    """A log y axis when the plotted (positive) values span more than 10x."""
    ys = np.concatenate([np.asarray(line.get_ydata(), dtype=np.float64) for line in ax.lines])
    ys = ys[np.isfinite(ys)]
    if len(ys) and ys.min() > 0 and ys.max() / ys.min() > 10:
        ax.set_yscale("log")


# -- detections ----------------------------------------------------------------------------------


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    """A numpy array from a numpy array, a list or a (possibly CUDA, grad-tracking) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def class_color(label: int) -> tuple[int, int, int]:
    """The RGB colour of label ``k`` (1..K) in the detection drawings."""
    return CLASS_COLORS[(int(label) - 1) % len(CLASS_COLORS)]


def _put_label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    """``text`` on a filled box of ``color`` just above ``(x, y)`` (below it at the top edge)."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = y - th - base - 2 if y - th - base - 2 >= 0 else y
    x = min(max(0, x), max(0, canvas.shape[1] - tw - 2))
    cv2.rectangle(canvas, (x, top), (x + tw + 2, top + th + base + 2), color, cv2.FILLED)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(canvas, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def _title_strip(title: str, width: int, scale: float) -> np.ndarray:
    """A dark strip as wide as the image with ``title`` in white (shrunk to fit the width)."""
    while scale > 0.3 and cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 8:
        scale -= 0.05
    (_, th), base = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    strip = np.full((th + base + 10, width, 3), 40, dtype=np.uint8)
    cv2.putText(strip, title, (4, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def draw_detections(image: np.ndarray, predictions: Mapping[str, Any], classes: Sequence[str],
                    score_thresh: float = 0.5, title: str = "") -> np.ndarray:
    """A copy of ``image`` (``[H, W, 3]`` uint8 RGB) with the detections scoring at least
    ``score_thresh`` drawn: a box in the class colour and ``class score`` above it (no score when
    ``predictions`` has no ``scores``, e.g. ground truth). ``predictions`` holds ``boxes``
    ``[D, 4]`` xyxy pixels and ``labels`` ``[D]`` (1..K), numpy or torch. With a ``title``, a
    strip on top holds it (the result is then taller than ``image``).
    """
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    boxes = _numpy(predictions["boxes"], np.float64).reshape(-1, 4)
    labels = _numpy(predictions["labels"], np.int64).reshape(-1)
    scores = _numpy(predictions["scores"], np.float64).reshape(-1) if "scores" in predictions else None
    scale = max(0.35, min(canvas.shape[:2]) / 800)
    thickness = max(1, round(min(canvas.shape[:2]) / 250))
    order = np.argsort(scores) if scores is not None else np.arange(len(boxes))  # best drawn last, on top
    for i in order:
        if scores is not None and scores[i] < score_thresh:
            continue
        k = int(labels[i])
        color = class_color(k)
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), color, thickness)
        name = classes[k - 1] if 1 <= k <= len(classes) else f"class {k}"
        _put_label(canvas, name if scores is None else f"{name} {scores[i]:.2f}", x1, y1, color, scale)
    if title:
        canvas = np.concatenate([_title_strip(title, canvas.shape[1], max(0.45, scale * 1.2)), canvas], axis=0)
    return canvas


def _fit(image: np.ndarray, prediction: Mapping[str, Any], max_side: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``image`` shrunk so that its longer side is at most ``max_side``, with its boxes scaled alike."""
    h, w = image.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    if factor >= 1.0:
        return image, dict(prediction)
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return small, {**prediction, "boxes": _numpy(prediction["boxes"], np.float64).reshape(-1, 4) * factor}


def _pad(cell: np.ndarray, height: int, width: int, value: int = 255) -> np.ndarray:
    out = np.full((height, width, 3), value, dtype=np.uint8)
    out[: cell.shape[0], : cell.shape[1]] = cell
    return out


def detections_grid(images: Sequence[np.ndarray], columns: Mapping[str, Sequence[Mapping[str, Any]]],
                    classes: Sequence[str], out_png: str, score_thresh: float = 0.5,
                    ground_truth: Sequence[Mapping[str, Any]] | None = None, max_side: int = 480) -> str:
    """A PNG grid: one row per image, one column per model (``columns`` maps a model name to one
    prediction per image), a first ``ground truth`` column when ``ground_truth`` is given. Images
    are shrunk to ``max_side`` pixels at most and padded to a common cell size.

    Raises:
        DetkdError: no image, a column whose length differs from the images', or a write failure.
    """
    named = ({"ground truth": ground_truth} if ground_truth is not None else {}) | dict(columns)
    if not images or not named:
        raise DetkdError(f"{out_png}: nothing to draw: {'no image' if not images else 'no column'} given")
    wrong = [f"{name} ({len(preds)})" for name, preds in named.items() if len(preds) != len(images)]
    if wrong:
        raise DetkdError(f"{out_png}: {len(images)} image(s) but the columns {', '.join(wrong)} hold other counts")
    cells = []
    for i, image in enumerate(images):
        for name, preds in named.items():
            small, pred = _fit(image, preds[i], max_side)
            cells.append(draw_detections(small, pred, classes, score_thresh, title=name))
    return _write_grid(cells, len(images), len(named), out_png)


def _write_grid(cells: Sequence[np.ndarray], rows: int, cols: int, out_png: str, gap: int = 6) -> str:
    """Cells (row-major) padded to a common size, ``gap`` white pixels apart, written as a PNG."""
    height, width = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
    grid = np.full((rows * (height + gap) + gap, cols * (width + gap) + gap, 3), 255, dtype=np.uint8)
    for n, cell in enumerate(cells):
        r, c = divmod(n, cols)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        grid[y: y + height, x: x + width] = _pad(cell, height, width, value=235)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    if not cv2.imwrite(out_png, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise DetkdError(f"{out_png}: cannot write the figure")
    return out_png


def predictions_for_images(results_json: str, index: DatasetIndex, image_ids: Sequence[Any]) -> list[dict[str, Any]]:
    """The predictions of a COCO results JSON (:func:`detkd.evaluation.results.load_results`) for
    ``image_ids``, in that order: dicts of ``boxes`` ``[N, 4]`` xyxy, ``scores``, ``labels``.

    Raises:
        DetkdError: the file is bad (naming it and the entry) or an id is not in ``index``.
    """
    by_id = {pred["image_id"]: pred for pred in load_results(results_json, index)}
    missing = [i for i in image_ids if i not in by_id]
    if missing:
        raise DetkdError(f"{results_json}: image id(s) {missing[:5]} not in the dataset of {index.root}")
    return [by_id[i] for i in image_ids]


def images_and_ground_truth(index: DatasetIndex, image_ids: Sequence[Any]) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The RGB images of ``image_ids`` and their annotations (``boxes``, ``labels``: no scores),
    to draw as the ``ground truth`` column of :func:`detections_grid`."""
    records = {r.image_id: r for r in index.records}
    missing = [i for i in image_ids if i not in records]
    if missing:
        raise DetkdError(f"image id(s) {missing[:5]} not in the dataset of {index.root}")
    chosen = [records[i] for i in image_ids]
    truth = [{"image_id": r.image_id, "boxes": r.boxes, "labels": r.labels} for r in chosen]
    return [read_rgb(r.file_name) for r in chosen], truth
