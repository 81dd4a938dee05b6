"""The rows of ``detkd bench`` and their forms: markdown table, CSV, JSON and a speed/accuracy plot.

Every form holds the same numbers: :func:`row_dict` rounds each value once (milliseconds, img/s
and speed-ups to 2 decimals, GFLOPs to 3, MB to 1, AP values to 4), the JSON and the CSV write
those values and the table prints them with the same number of decimals (``params`` in millions
and AP in percent: ``params / 1e6`` to 2 decimals, ``100 * ap50`` to 2 decimals).

Accuracy comes from the metrics JSON that ``detkd eval ... --json`` prints (:func:`read_accuracy`):
AP50 is ``voc.mAP`` (PASCAL VOC all-point AP at IoU 0.5; ``voc07.mAP``, the 11-point one, when
there is no ``voc``, then ``coco.AP50``), mAP is COCO's ``coco.AP`` (AP@[.5:.95]).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from detkd.errors import DetkdError
from detkd.utils.formatting import markdown_table, num

HELD = "held counts"  # untrained weights (or --hold): proposals and detections held at their maxima
CHECKPOINT = "checkpoint"  # trained weights, the model's own counts
UNTRAINED = "untrained"  # untrained weights, counts left free (--no-hold): noisy

DECIMALS = {"gflops": 3, "latency_ms": 2, "latency_ms_iqr": 2, "latency_ms_p90": 2, "img_per_s_b1": 2,
            "img_per_s_b8": 2, "peak_mem_mb": 1, "ap50": 4, "map": 4, "speedup": 2, "speedup_iqr": 2}
NOISE_LIMIT = 0.15  # an interquartile range above this share of its median flags the row as noisy
NOISY = "noisy: machine busy?"


@dataclass
class BenchRow:
    """One model at one input size: what was measured and how."""

    name: str  # the config's file stem (a distillation config's teacher: its teacher config's stem)
    config: str
    checkpoint: str | None
    mode: str  # HELD, CHECKPOINT or UNTRAINED
    device: str
    threads: int
    amp: str | None
    min_size: int
    max_size: int
    raw_hw: str  # the benchmark image before the model's resize, "HxW"
    input_hw: str  # after the resize, "HxW"
    num_classes: int  # K + 1, the predictor's size
    params: int
    gflops: float  # per image, multiply-add = 2 FLOPs, RoIAlign/NMS not counted
    latency_ms: float  # median at batch 1 (over interleaved rounds)
    latency_ms_p90: float
    img_per_s_b1: float
    img_per_s_b8: float | None
    peak_mem_mb: float | None  # CUDA: max allocated; CPU: process peak RSS; None: unavailable
    runs: int = 0  # timed forwards a round
    warmup: int = 0
    ap50: float | None = None
    map: float | None = None
    speedup: float | None = None  # median over rounds of reference latency / this latency
    reference: str | None = None  # the row the speed-up is relative to
    latency_ms_iqr: float | None = None  # interquartile range of the per-round latencies
    speedup_iqr: float | None = None  # interquartile range of the per-round speed-ups
    rounds: int = 1  # interleaved rounds (every model timed once a round, order rotated)

    @property
    def noisy(self) -> bool:
        """A spread (IQR over rounds) above :data:`NOISE_LIMIT` of its latency or speed-up."""
        spreads = [(self.latency_ms_iqr, self.latency_ms), (self.speedup_iqr, self.speedup)]
        return any(iqr is not None and value and iqr / value > NOISE_LIMIT for iqr, value in spreads)


def row_dict(row: BenchRow) -> dict[str, Any]:
    """The row as a plain dict, values rounded as the table shows them (see the module docstring)."""
    out = dataclasses.asdict(row)
    for key, digits in DECIMALS.items():
        if out[key] is not None:
            out[key] = round(float(out[key]), digits)
    out["noisy"] = row.noisy
    return out


def rows_json(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    """The rows as a JSON-ready list of dicts."""
    return [row_dict(r) for r in rows]


def _fixed(key: str, scale: float = 1.0, digits: int | None = None) -> Callable[[dict[str, Any]], str]:
    digits = DECIMALS[key] if digits is None else digits

    def cell(d: dict[str, Any]) -> str:
        return num(d[key], f".{digits}f", scale=scale)

    return cell


# (header, cell) per table column; AP columns only when a row has a value
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("model", lambda d: d["name"]),
    ("counts", lambda d: "held" if d["mode"] == HELD else "real"),
    ("min/max", lambda d: f"{d['min_size']}/{d['max_size']}"),
    ("input", lambda d: d["input_hw"]),
    ("params (M)", lambda d: f"{d['params'] / 1e6:.2f}"),
    ("GFLOPs", _fixed("gflops")),
    ("latency ms", _fixed("latency_ms")),
    ("IQR ms", _fixed("latency_ms_iqr")),
    ("p90 ms", _fixed("latency_ms_p90")),
    ("img/s b1", _fixed("img_per_s_b1")),
    ("img/s b8", _fixed("img_per_s_b8")),
    ("peak MB", _fixed("peak_mem_mb")),
    ("AP50 (%)", _fixed("ap50", 100.0, 2)),
    ("mAP (%)", _fixed("map", 100.0, 2)),
    ("speed-up", _fixed("speedup")),
    ("speed-up IQR", _fixed("speedup_iqr")),
    ("speed-up vs", lambda d: d["reference"] or "-"),  # its teacher (a distillation config), else the first row
    ("note", lambda d: NOISY if d["noisy"] else ""),
]
RIGHT_FROM = 2  # columns from here on are right-aligned


def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as a markdown table (AP columns only when some row has an accuracy value)."""
    dicts = rows_json(rows)
    columns = [(h, c) for h, c in COLUMNS
               if (h not in ("AP50 (%)", "mAP (%)") or any(d[_ap_key(h)] is not None for d in dicts))
               and (h != "note" or any(d["noisy"] for d in dicts))]
    rows = [[cell(d) for _, cell in columns] for d in dicts]
    return "\n".join(markdown_table([h for h, _ in columns], rows, right_from=RIGHT_FROM))


def _ap_key(header: str) -> str:
    return "ap50" if header.startswith("AP50") else "map"


def mode_lines(rows: Sequence[BenchRow]) -> list[str]:
    """The lines printed above the table: how the counts were set and how things were measured."""
    if not rows:
        return []
    lines = []
    held = [r for r in rows if r.mode == HELD]
    if held:
        who = "untrained weights" if all(r.checkpoint is None for r in held) else "held counts"
        lines.append(f"{who}: proposals held at rpn.post_nms_top_n_test and detections at "
                     f"roi.detections_per_img ({', '.join(_names(rows, HELD))})")
    if any(r.mode == CHECKPOINT for r in rows):
        lines.append("trained weights: the models' own proposal and detection counts "
                     f"({', '.join(_names(rows, CHECKPOINT))})")
    if any(r.mode == UNTRAINED for r in rows):
        lines.append("untrained weights, counts not held: timings vary with the random counts "
                     f"({', '.join(_names(rows, UNTRAINED))})")
    return lines + [settings_line(rows[0])]


def settings_line(row: BenchRow) -> str:
    """Device, threads, precision, input and what latency, memory and GFLOPs mean."""
    threads = f"{row.threads} thread{'s' if row.threads != 1 else ''}"
    memory = "max CUDA memory allocated" if row.device.startswith("cuda") else "process peak RSS"
    return (f"device {row.device}, {threads}, {row.amp or 'fp32'}; input {row.raw_hw} resized by each model; "
            f"latency: batch 1, {row.warmup} warm-up runs, then {row.rounds} interleaved rounds of {row.runs} runs "
            "(every model once a round, order rotated); latency and IQR: median and interquartile range over "
            "rounds; speed-up: median over rounds of the per-round ratio to the row named under \"speed-up vs\" "
            "(a distillation config's teacher, else the first row); rows whose IQR exceeds "
            f"{100 * NOISE_LIMIT:.0f} % are marked \"{NOISY}\"; peak MB: {memory} of a batch-1 forward; GFLOPs per "
            "image (multiply-add = 2, RoIAlign and NMS not counted)")


def _names(rows: Sequence[BenchRow], mode: str) -> list[str]:
    return list(dict.fromkeys(r.name for r in rows if r.mode == mode))


def format_csv(rows: Sequence[BenchRow]) -> str:
    """The rows as CSV text: a header of every field, then one line a row (None: empty cell)."""
    buffer = io.StringIO()
    fields = [f.name for f in dataclasses.fields(BenchRow)] + ["noisy"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for d in rows_json(rows):
        writer.writerow({k: "" if v is None else v for k, v in d.items()})
    return buffer.getvalue()


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (its folder created); an unwritable path is a DetkdError."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as e:
        raise DetkdError(f"{path}: cannot write: {e.strerror or e}") from None


def format_json(rows: Sequence[BenchRow]) -> str:
    return json.dumps(rows_json(rows), indent=2) + "\n"


def _metric(metrics: dict[str, Any], family: str, key: str) -> float | None:
    value = metrics.get(family, {}).get(key) if isinstance(metrics.get(family), dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_accuracy(path: str) -> tuple[float | None, float | None]:
    """``(AP50, mAP)`` from a ``detkd eval ... --json`` metrics file (see the module docstring).

    Raises:
        DetkdError: a missing or unreadable file, or JSON of another shape (naming the file).
    """
    expected = ('the metrics JSON printed by `detkd eval CONFIG --checkpoint CKPT --json`, a mapping keyed '
                'by family such as {"voc": {"mAP": 0.71, ...}, "coco": {"AP": 0.42, "AP50": 0.70, ...}}')
    try:
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
    except FileNotFoundError:
        raise DetkdError(f"{path}: --results file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DetkdError(f"{path}: not a readable JSON file ({e}); expected {expected}") from None
    families = ("voc", "voc07", "coco")
    if not isinstance(metrics, dict) or not any(isinstance(metrics.get(f), dict) for f in families):
        found = f"keys {sorted(metrics)[:5]}" if isinstance(metrics, dict) else f"a {type(metrics).__name__}"
        raise DetkdError(f"{path}: not an evaluation metrics file (found {found}); expected {expected}")
    ap50 = _metric(metrics, "voc", "mAP")
    ap50 = ap50 if ap50 is not None else _metric(metrics, "voc07", "mAP")
    ap50 = ap50 if ap50 is not None else _metric(metrics, "coco", "AP50")
    return ap50, _metric(metrics, "coco", "AP")


def plot_speed_accuracy(rows: Sequence[BenchRow], out_png: str) -> None:
    """Latency (x, ms) against AP50 (y, %) as a PNG: one marker per model, the rows of one model
    (a ``--sizes`` sweep) joined by a line, each point labelled with its min_size.

    Raises:
        DetkdError: no row has an AP50 value (pass ``--results``), or the file cannot be written.
    """
    points = [r for r in rows if r.ap50 is not None]
    if not points:
        raise DetkdError(f"{out_png}: nothing to plot: no row has an accuracy value (pass --results "
                         "EVAL.json, the output of `detkd eval ... --json`, for the CONFIGs)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    markers = "osD^v<>p*hX"
    for i, name in enumerate(dict.fromkeys(r.name for r in points)):
        group = sorted((r for r in points if r.name == name), key=lambda r: r.latency_ms)
        xs, ys = [r.latency_ms for r in group], [100 * r.ap50 for r in group]
        ax.plot(xs, ys, marker=markers[i % len(markers)], linestyle="-" if len(group) > 1 else "none", label=name)
        for r, x, y in zip(group, xs, ys):
            ax.annotate(str(r.min_size), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"latency per image, batch 1 (ms, {points[0].device}, {points[0].threads} threads)")
    ax.set_ylabel("AP50 (%)")
    ax.set_title("speed and accuracy (labels: input min_size)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
        fig.savefig(out_png)
    except OSError as e:
        raise DetkdError(f"{out_png}: cannot write the plot: {e.strerror or e}") from None
    finally:
        plt.close(fig)
