"""The table, CSV and JSON hold the same numbers; accuracy files; the speed/accuracy plot."""

from __future__ import annotations

import csv
import io
import json

import matplotlib.image
import numpy as np
import pytest

from detkd.bench.report import (
    HELD,
    BenchRow,
    format_csv,
    format_json,
    format_table,
    mode_lines,
    plot_speed_accuracy,
    read_accuracy,
)
from detkd.errors import DetkdError

# table header -> (JSON key, the factor the table shows it with)
NUMERIC = {"params (M)": ("params", 1e-6), "GFLOPs": ("gflops", 1), "latency ms": ("latency_ms", 1),
           "p90 ms": ("latency_ms_p90", 1), "img/s b1": ("img_per_s_b1", 1), "img/s b8": ("img_per_s_b8", 1),
           "peak MB": ("peak_mem_mb", 1), "AP50 (%)": ("ap50", 100), "mAP (%)": ("map", 100),
           "speed-up": ("speedup", 1)}


def row(name: str, size: int, latency: float, ap50: float | None = None, **extra) -> BenchRow:
    values = dict(
        name=name, config=f"configs/{name}.yaml", checkpoint=None, mode=HELD, device="cpu", threads=1, amp=None,
        min_size=size, max_size=size * 5 // 3, raw_hw="480x640", input_hw=f"{size}x{size * 4 // 3}",
        num_classes=21, params=41_304_123, gflops=133.456789, latency_ms=latency, latency_ms_p90=latency * 1.1234,
        img_per_s_b1=1000 / latency, img_per_s_b8=8.123456, peak_mem_mb=1234.5678, runs=10, warmup=2,
        ap50=ap50, map=None if ap50 is None else ap50 / 2, speedup=1000.0 / 3 / latency,
    )
    return BenchRow(**{**values, **extra})


def parse_table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], r)) for r in cells[2:]]


def test_table_csv_and_json_hold_the_same_numbers() -> None:
    rows = [row("teacher", 688, 1234.5678, ap50=0.712345), row("student", 344, 345.678, ap50=0.654321,
            img_per_s_b8=None, peak_mem_mb=None)]
    table = parse_table(format_table(rows))
    as_json = json.loads(format_json(rows))
    as_csv = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert [t["model"] for t in table] == [j["name"] for j in as_json] == [c["name"] for c in as_csv]
    for t, j, c in zip(table, as_json, as_csv):
        for header, (key, factor) in NUMERIC.items():
            if j[key] is None:
                assert t[header] == "-" and c[key] == ""
                continue
            assert float(c[key]) == j[key]
            assert float(t[header]) == pytest.approx(j[key] * factor, abs=0.006), header
    assert as_json[0]["latency_ms"] == 1234.57 and as_json[0]["params"] == 41_304_123
    assert {"name", "min_size", "params", "gflops", "latency_ms", "latency_ms_p90", "img_per_s_b1",
            "img_per_s_b8", "peak_mem_mb"} <= set(as_json[0])


def test_the_table_says_what_each_speed_up_is_against() -> None:
    """A distillation config's row is timed against its teacher, the others against the first row."""
    rows = [row("student_small", 320, 10.0, reference="student_small"), row("teacher", 640, 40.0, reference="student_small"),
            row("distill_small", 320, 10.0, reference="teacher"), row("untimed", 320, 10.0)]
    table = parse_table(format_table(rows))
    assert [t["speed-up vs"] for t in table] == ["student_small", "student_small", "teacher", "-"]
    assert 'ratio to the row named under "speed-up vs" (a distillation config\'s teacher, else the first row)' in \
        mode_lines(rows)[-1]


def test_accuracy_columns_only_with_accuracy() -> None:
    header = format_table([row("a", 320, 10.0)]).splitlines()[0]
    assert "AP50" not in header and "speed-up" in header
    assert any("held at rpn.post_nms_top_n_test" in line for line in mode_lines([row("a", 320, 10.0)]))


def test_read_accuracy(tmp_path) -> None:
    good = tmp_path / "eval.json"
    good.write_text(json.dumps({"coco": {"AP": 0.4, "AP50": 0.6}, "voc07": {"mAP": 0.65}, "voc": {"mAP": 0.7}}))
    assert read_accuracy(str(good)) == (0.7, 0.4)
    coco_only = tmp_path / "coco.json"
    coco_only.write_text(json.dumps({"coco": {"AP": 0.4, "AP50": 0.6}}))
    assert read_accuracy(str(coco_only)) == (0.6, 0.4)
    for content in ([{"image_id": 1}], {"AP50": 0.5}):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(DetkdError, match=r"bad\.json.*expected"):
            read_accuracy(str(bad))


def test_plot_writes_a_png(tmp_path) -> None:
    rows = [row("teacher", s, 100.0 * s / 320, ap50=0.5 + s / 2000) for s in (160, 320, 480)]
    rows.append(row("student", 160, 20.0, ap50=0.45))
    out = tmp_path / "plot.png"
    plot_speed_accuracy(rows, str(out))
    image = matplotlib.image.imread(str(out))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(np.ptp(image[..., :3])) > 0.5  # not a uniform picture


def test_plot_without_accuracy_is_an_error(tmp_path) -> None:
    with pytest.raises(DetkdError, match="no row has an accuracy value"):
        plot_speed_accuracy([row("a", 320, 10.0)], str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
