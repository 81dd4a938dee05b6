"""``detkd init``: a study's configs chosen from real data (BCCD, KITTI tiny), run by ``detkd demo``
at toy size and checked by ``detkd doctor``; the choices checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from detkd.cli import main
from detkd.config import DistillConfig, load_any_config, load_config
from detkd.errors import DetkdError
from detkd.experiments.demo import MODELS
from detkd.experiments.study import FILES, anchor_sizes, inspect_data, kitti_splits, plan_study

TOY = ["--models", "cpu", "--size", "64", "--epochs", "1", "--teacher-epochs", "1", "--limit", "8"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_anchors_double_per_level_centred_on_the_box_sizes() -> None:
    sizes = np.linspace(10.0, 250.0, 241)  # 5th and 95th percentiles: 22 and 238 px
    assert np.percentile(sizes, [5, 95]) == pytest.approx([22.0, 238.0])
    # [a, 16a] centred on sqrt(22 * 238) = 72.4 px: a = 72.4 / 4 = 18.1 -> 18
    assert anchor_sizes(sizes) == [18, 36, 72, 144, 288]
    assert anchor_sizes(np.full(10, 0.5)) == [2, 4, 8, 16, 32]  # never below 2 px


def test_kitti_without_imagesets_holds_out_every_fifth_image(tmp_path: Path) -> None:
    train, test, lists, notes = kitti_splits(str(tmp_path), [f"{i:06d}" for i in range(12, 0, -1)])
    assert (train, test) == ("train", "val") and lists["val"] == ["000005", "000010"]
    assert len(lists["train"]) == 10 and not set(lists["train"]) & set(lists["val"]) and notes


def test_bccd_study_reads_the_data_as_data_stats_does(bccd_root: Path, tmp_path: Path, capsys) -> None:
    data = inspect_data("voc", str(bccd_root), str(tmp_path / "s"))
    assert (data.train_split, data.test_split, data.classes) == ("train", "test", ("Platelets", "RBC", "WBC"))
    assert main(["data", "stats", "--format", "voc", "--root", str(bccd_root), "--split", "train", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert data.train_images == stats["images"] and len(data.box_fractions) == stats["boxes"]
    assert data.median_size == (640.0, 480.0) and data.max_aspect == pytest.approx(640 / 480)
    gpu, cpu = plan_study(data, "gpu"), plan_study(data, "cpu")
    assert (gpu.min_size, gpu.max_size, cpu.min_size, cpu.max_size) == (480, 640, 320, 448)  # 320 * 4/3 -> 448
    assert gpu.anchor_sizes == anchor_sizes(data.box_fractions * 480)
    assert cpu.epochs == math.ceil(300 * 4 / data.train_images) and cpu.teacher_epochs == 8 * cpu.epochs


def test_a_study_is_not_written_over_without_force(bccd_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert main(["init", str(bccd_root), "--format", "voc", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert main(["init", str(bccd_root), "--format", "voc", "--out", str(out)]) == 2
    assert main(["init", str(bccd_root), "--format", "voc", "--out", str(out), "--force"]) == 0
    with pytest.raises(DetkdError, match="no such folder"):
        inspect_data("voc", str(tmp_path / "nowhere"), str(out))
    teacher = load_any_config(out / "teacher.yaml")  # gpu models: ResNet-50-FPN, torchvision's schedule
    assert teacher.model.backbone == "resnet50" and teacher.train.amp and teacher.data.root == str(bccd_root)


@pytest.mark.parametrize("dataset", ["bccd", "kitti"])
def test_init_then_demo_runs_the_study_at_toy_size_and_the_doctor_passes(dataset: str, request, tmp_path: Path,
                                                                         monkeypatch) -> None:
    root = request.getfixturevalue(f"{dataset}_root")
    fmt = "voc" if dataset == "bccd" else "kitti"
    monkeypatch.chdir(tmp_path)  # runs/ goes here
    out = tmp_path / "study"
    assert main(["init", str(root), "--format", fmt, "--out", str(out), *TOY]) == 0
    readme = (out / "README.md").read_text()
    for command in ("detkd data stats", "detkd train", "detkd doctor", "detkd distill", "detkd ablate", "detkd bench",
                    "detkd export", "detkd demo --data"):
        assert command in readme
    distill = load_config(out / "distill_lowres.yaml", schema=DistillConfig)
    assert distill.distill.rcn_cls.mode == "add" and distill.student.init == "teacher"  # the recipe, by name
    assert distill.model.min_size == 32 and distill.model.rpn.anchor_sizes == load_any_config(out / "teacher.yaml").model.rpn.anchor_sizes

    assert main(["demo", "--data", str(out), "--out", "report", "--jobs", "1"]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["teacher_source"] == "trained" and all(summary[m.name]["ap50"] is not None for m in MODELS)
    teacher = tmp_path / "report" / "runs" / "teacher" / "last.pt"
    assert main(["doctor", str(out / "distill_small.yaml"), f"teacher.checkpoint={teacher}", "--batches", "1",
                 "data.num_workers=0", "--json"]) == 0
    if dataset == "kitti":  # no ImageSets: the lists written beside the configs
        split = yaml.safe_load((out / "_base.yaml").read_text())["data"]["test_split"]
        assert split == str(out / "splits" / "val.txt") and len(Path(split).read_text().split()) == 15
