"""``detkd bench`` end to end on tiny configs: JSON rows, distillation pairs, files and errors."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from detkd.cli import build_parser, main

FAST = ["--runs", "2", "--warmup", "1", "--batch-runs", "1", "--threads", "1", "--input", "96x128"]
TINY = """\
data: {format: synth}
model:
  preset: tiny
  min_size: 64
  max_size: 64
  weights_backbone: MobileNet_V3_Large_Weights.IMAGENET1K_V1   # never read by detkd bench
  rpn: {post_nms_top_n_test: 40}
  roi: {detections_per_img: 20}
"""


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A tiny config, a smaller-input student and a distillation config over them; no network,
    an empty torch cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network access"))
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(TINY)
    student = tmp_path / "student.yaml"
    student.write_text("_base_: teacher.yaml\nmodel: {min_size: 32, max_size: 32}\n")
    distill = tmp_path / "distill.yaml"
    distill.write_text(f"_base_: student.yaml\nteacher:\n  config: {teacher}\n  checkpoint: {tmp_path / 'none.pt'}\n")
    return {"teacher": teacher, "student": student, "distill": distill}


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["bench", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_rows(configs, capsys, caplog) -> None:
    caplog.set_level("INFO", logger="detkd")
    code, out, err = bench(capsys, str(configs["teacher"]), *FAST, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1
    r = rows[0]
    assert (r["name"], r["min_size"], r["mode"], r["num_classes"]) == ("teacher", 64, "held counts", 10)
    for key in ("params", "gflops", "latency_ms", "latency_ms_p90", "img_per_s_b1", "img_per_s_b8"):
        assert r[key] > 0, key
    assert "peak_mem_mb" in r and r["speedup"] == 1.0
    assert "teacher @64: building" in caplog.text  # progress (stderr outside pytest)


def test_distillation_config_gives_teacher_and_student(configs, capsys, caplog, tmp_path) -> None:
    caplog.set_level("INFO", logger="detkd")
    out_csv, out_json = tmp_path / "rows.csv", tmp_path / "rows.json"
    code, out, err = bench(capsys, str(configs["distill"]), *FAST, "--csv", str(out_csv), "--out-json",
                           str(out_json), "--profile")
    assert code == 0, err
    assert "untrained weights: proposals held at rpn.post_nms_top_n_test" in out
    assert "| teacher |" in out and "| distill |" in out and "teacher / distill" in out  # table, profiles
    assert "none.pt not found: the teacher is measured untrained" in caplog.text
    rows = json.loads(out_json.read_text())
    assert [(r["name"], r["min_size"]) for r in rows] == [("teacher", 64), ("distill", 32)]
    assert rows[1]["reference"] == "teacher" and rows[1]["speedup"] > 0
    assert [r["name"] for r in csv.DictReader(out_csv.open())] == ["teacher", "distill"]


def test_checkpoints_pair_in_order_and_sizes_sweep(configs, capsys, tmp_path) -> None:
    code, out, err = bench(capsys, str(configs["teacher"]), str(configs["student"]), "--sizes", "32,48", *FAST,
                           "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["name"], r["min_size"]) for r in rows] == [("teacher", 32), ("teacher", 48), ("student", 32),
                                                          ("student", 48)]


@pytest.mark.parametrize("problem", ["checkpoint", "results", "amp", "pairing"])
def test_errors_exit_2_naming_the_problem(configs, capsys, tmp_path, problem: str) -> None:
    results = tmp_path / "dets.json"
    results.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5, "category_id": 1}]))
    args, expected = {
        "checkpoint": (["--checkpoint", str(tmp_path / "missing.pt")], "missing.pt: checkpoint not found"),
        "results": (["--results", str(results)], "dets.json: not an evaluation metrics file"),
        "amp": (["--amp", "fp16"], "CUDA only"),
        "pairing": (["--checkpoint", "a.pt", "b.pt"], "--checkpoint: 2 given for 1 CONFIG"),
    }[problem]
    code, out, err = bench(capsys, str(configs["teacher"]), *FAST, *args)
    assert code == 2 and out == ""
    assert err.startswith("detkd: error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_help_explains_with_examples() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["bench"]
    text = sub.format_help()
    assert "detkd bench configs/voc/teacher_r50.yaml configs/voc/student_r50_half.yaml --threads 2 --profile" in text
    for option in ("--checkpoint", "--sizes", "--device", "--threads", "--runs", "--json", "--plot", "--results",
                   "--csv", "--out-json", "--warmup", "--amp", "--hold", "--no-hold", "--profile", "--input"):
        assert option in text, option


def test_results_add_accuracy_and_plot(configs, capsys, tmp_path) -> None:
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"coco": {"AP": 0.31, "AP50": 0.52}, "voc07": {"mAP": 0.5}, "voc": {"mAP": 0.55}}))
    plot = tmp_path / "plot.png"
    code, out, err = bench(capsys, str(configs["teacher"]), str(configs["student"]), *FAST, "--results",
                           str(metrics), "--plot", str(plot))
    assert code == 0, err
    table = [line for line in out.splitlines() if line.startswith("| teacher") or line.startswith("| student")]
    assert "| 55.00 | 31.00 |" in table[0] and "| - | - |" in table[1]
    assert plot.stat().st_size > 1000
