"""``detkd demo`` end to end at a toy size: five tiny models on a few generated images, every
file of the report with real content, and a second run that reads everything back."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from detkd.cli import main
from detkd.errors import DetkdError
from detkd.experiments import bundled, demo, pool, runner
from detkd.experiments.demo import MODELS, StageClock, config_paths
from detkd.experiments.figures import is_informative_png
from detkd.experiments.stats import format_seconds

MODEL_KEYS = ("ap50", "map", "latency_ms", "gflops", "params")
KD_KEYS = ("gain_ap50", "gap_closed")

BASE = """\
seed: 0
device: cpu
data:
  format: synth
  synth: {{images: 12, seed: 0, profile: easy, cache_dir: "{cache}"}}
  num_workers: 0
train:
  epochs: 1
  batch_size: 2
  optimizer: adamw
  lr: 1.0e-3
  warmup_iters: 2
  log_every: 1
"""
MODEL = "_base_: _base.yaml\nmodel: {{preset: {preset}, min_size: {size}, max_size: {size}}}\n"
DISTILL = "_base_: [{student}, ../_base_/distill.yaml]\nteacher: {{config: {teacher}, checkpoint: unused.pt}}\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def write_toy_configs(root: Path) -> Path:
    """A demo folder like configs/synth with tiny models on 12 images (``_base_`` of distill.yaml
    is copied next to it, as in the repository)."""
    folder = root / "toy"
    folder.mkdir()
    (root / "_base_").mkdir()
    repo = Path(__file__).resolve().parents[2]
    (root / "_base_" / "distill.yaml").write_text((repo / "configs" / "_base_" / "distill.yaml").read_text())
    (folder / "_base.yaml").write_text(BASE.format(cache=root / "cache"))
    (folder / "teacher.yaml").write_text(MODEL.format(preset="small", size=96))
    (folder / "student_small.yaml").write_text(MODEL.format(preset="tiny", size=96))
    (folder / "student_lowres.yaml").write_text(MODEL.format(preset="small", size=48))
    for kind in ("small", "lowres"):
        text = DISTILL.format(student=f"student_{kind}.yaml", teacher=folder / "teacher.yaml")
        (folder / f"distill_{kind}.yaml").write_text(text)
    with open(folder / "distill_small.yaml", "a") as f:  # a transfer set: 4 more images, labelled by the teacher
        f.write("data: {unlabeled: {synth_images: 4}}\n")
    return folder


@dataclass
class ToyDemo:
    folder: Path  # the toy configs
    out: Path  # the demo's output folder
    printed: str  # what it printed
    log: str  # what it logged (level INFO)


@pytest.fixture(scope="module")
def toy_demo(tmp_path_factory: pytest.TempPathFactory, log_on_one_thread) -> Iterator[ToyDemo]:
    """One toy demo, two cells at a time, shared by the tests of this module (each toy demo takes
    about a minute on the slow CPU kind)."""
    root = tmp_path_factory.mktemp("demo")
    folder, out, printed = write_toy_configs(root), root / "report", io.StringIO()
    with log_on_one_thread() as log:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
            patch.setattr(pool, "HEARTBEAT_S", 0.5)
            assert main(["demo", "--data", str(folder), "--out", str(out), "--jobs", "2"]) == 0
        yield ToyDemo(folder, out, printed.getvalue(), "\n".join(log))


def test_demo_writes_a_complete_report_and_resumes_without_retraining(toy_demo: ToyDemo, monkeypatch) -> None:
    folder, out, printed = toy_demo.folder, toy_demo.out, toy_demo.printed
    assert "running: student_" in toy_demo.log  # the parent says where the workers are
    assert "student_lowres_kd" in printed and "report.md" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["wall_s"] > 0 and summary["teacher_source"] == "trained"  # no bundled teacher fits the toy one
    assert list(summary["transfer_sets"]) == ["student_small_kd"] and "4 more images" in summary["transfer_sets"]["student_small_kd"]
    assert "transfer set: 4 unlabeled images" in (out / "runs" / "student_small_kd" / "log.txt").read_text()
    for model in MODELS:
        entry = summary[model.name]
        assert all(entry[k] is not None for k in MODEL_KEYS), (model.name, entry)
        assert 0.0 <= entry["ap50"] <= 1.0 and 0.0 <= entry["map"] <= entry["ap50"] + 1e-9
        assert entry["latency_ms"] > 0 and entry["gflops"] > 0 and entry["params"] > 0
        assert entry["latency_ms_iqr"] >= 0 and entry["speedup"] > 0 and entry["speedup_iqr"] >= 0
        if model.baseline:
            assert all(k in entry for k in KD_KEYS)
            assert entry["gain_ap50"] == pytest.approx(entry["ap50"] - summary[model.baseline]["ap50"])
    # the small student has fewer parameters than the teacher; the low-res one the same, fewer FLOPs
    assert summary["student_small"]["params"] < summary["teacher"]["params"]
    assert summary["student_lowres"]["params"] == summary["teacher"]["params"]
    assert summary["student_lowres"]["gflops"] < summary["teacher"]["gflops"]

    report = (out / "report.md").read_text()
    for needle in ("## Summary", "Transfer set of student_small_kd: 4 more images", "## AP50 per class", "speed_accuracy.png", "training_curves.png", "detections.png",
                   "## The doctor on the distilled students", "### student_lowres_kd", "interleaved rounds"):
        assert needle in report
    assert "- student_small_kd: distillation" in printed and "faster than the teacher" in printed
    assert report.count("| student_") >= 4
    for png in ("speed_accuracy.png", "per_class_ap.png", "training_curves.png", "detections.png"):
        assert is_informative_png(str(out / png)), png

    def no_training(cfg):
        raise AssertionError("a finished model was trained again")

    # the students ran in two worker processes, each logging to its own file
    for model in MODELS[1:]:
        assert "epoch 1" in (out / "runs" / model.name / "log.txt").read_text(), model.name
    monkeypatch.setattr(runner, "train_cell", no_training)  # in this process: --jobs 1
    assert main(["demo", "--data", str(folder), "--out", str(out), "--jobs", "1"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["teacher"]["ap50"] == summary["teacher"]["ap50"]


def test_a_given_or_bundled_teacher_is_scored_not_trained(toy_demo: ToyDemo, tmp_path: Path, monkeypatch) -> None:
    folder, trained = toy_demo.folder, toy_demo.out
    teacher = trained / "runs" / "teacher" / "last.pt"
    calls = []
    real_train = runner.train_cell
    monkeypatch.setattr(runner, "train_cell", lambda cfg: calls.append(cfg.output_dir) or real_train(cfg))
    assert main(["demo", "--data", str(folder), "--out", str(tmp_path / "given"), "--teacher", str(teacher),
                 "--jobs", "1"]) == 0
    given = json.loads((tmp_path / "given" / "summary.json").read_text())
    assert given["teacher_source"] == str(teacher) and not any("teacher" in c for c in calls)
    assert given["teacher"]["ap50"] == json.loads((trained / "summary.json").read_text())["teacher"]["ap50"]
    # the same teacher as a bundled asset: found, checked, and used without training
    assets = tmp_path / "assets"
    bundled.write_bundled(str(teacher), assets, "detkd train toy/teacher.yaml", {"split": "test", "ap50": 0.0})
    monkeypatch.setattr(bundled, "ASSET_DIR", assets)
    choice = demo.choose_teacher(str(folder), str(tmp_path / "b"))
    assert choice.source == "bundled" and choice.checkpoint == str(assets / bundled.TEACHER_FILE)
    assert demo.choose_teacher(str(folder), str(tmp_path / "b"), train_teacher=True).source == "trained"
    with pytest.raises(DetkdError, match="give one"):
        demo.choose_teacher(str(folder), str(tmp_path / "b"), teacher=str(teacher), train_teacher=True)


def test_a_folder_without_the_five_configs_is_an_error_naming_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "teacher.yaml").write_text("{}\n")
    with pytest.raises(DetkdError, match="distill_small.yaml"):
        config_paths(str(tmp_path))
    assert main(["demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2


def test_the_clock_scales_the_elapsed_time_by_the_shares_left() -> None:
    clock = StageClock([1.0, 3.0])
    clock.start -= 10.0  # the first step took 10 s
    clock.done = 1
    assert clock.left() == pytest.approx(30.0, abs=1.0)
    assert StageClock([1.0, 3.0]).left() is None  # nothing done yet: no estimate
    assert format_seconds(75) == "1m15s" and format_seconds(9.6) == "10s"


def test_demo_refuses_jobs_under_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--jobs", "0"]) == 2
    assert "--jobs 0: give 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before anything is written


def test_a_baseline_starts_where_its_distilled_student_starts(tmp_path: Path) -> None:
    """``student.init: inherit`` (or ``teacher``) in a distillation config: its baseline gets the
    same start, the tensors that fit (or all of them), so the pair differs by the distillation alone."""
    from detkd.experiments.demo import TeacherChoice, demo_cells

    folder = write_toy_configs(tmp_path)
    with open(folder / "distill_small.yaml", "a") as f:
        f.write("student: {init: inherit}\n")
    with open(folder / "distill_lowres.yaml", "a") as f:
        f.write("student: {init: teacher}\n")
    cells = {cell.name: cell for cell, _ in demo_cells(str(folder), str(tmp_path / "out"), 0,
                                                        TeacherChoice("given", "t.pt", ""))}
    assert {"model.checkpoint=t.pt", "model.checkpoint_matching=true"} <= set(cells["student_small"].overrides)
    assert {"model.checkpoint=t.pt", "model.checkpoint_matching=false"} <= set(cells["student_lowres"].overrides)
    assert not any(o.startswith("model.checkpoint") for o in cells["student_small_kd"].overrides)
