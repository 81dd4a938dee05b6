"""tools/leaderboard.py on a synthetic ablation: an ``ablation.json`` made by ``detkd ablate``'s
own aggregation from cells of known scores and times (nothing trained), checked against numbers
worked out by hand."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from detkd.config import save_config
from detkd.experiments import ablate, runner

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "configs" / "synth"
TEACHER = {"ap50": 0.80, "map": 0.50}
# per row and seed 0, 1, 2: (test AP50, test mAP), training seconds
CELLS = {"baseline": ([(0.50, 0.30), (0.60, 0.35), (0.55, 0.32)], 100.0),
         "recipe": ([(0.49, 0.29), (0.58, 0.35), (0.55, 0.32)], 120.0),
         "cwd": ([(0.53, 0.31), (0.61, 0.36), (0.60, 0.33)], 150.0)}


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("leaderboard", REPO / "tools" / "leaderboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scored(name: str, run_dir: str, ap50: float, map_: float, seconds: float) -> runner.CellResult:
    metrics = {split: {"voc": {"mAP": ap50}, "coco": {"AP": map_}} for split in ("train", "test")}
    return runner.CellResult(name, run_dir, f"{run_dir}/last.pt", metrics, seconds)


def synthetic_ablation(folder: Path) -> Path:
    """The ablation.json of baseline, recipe and cwd over 3 seeds at train.epochs=2; the recipe's
    runs left their resolved config.yaml, at 4 epochs (it wins over the config file)."""
    plan = ablate.plan_ablation(str(SYNTH / "distill_small.yaml"), seeds=3, out_dir=str(folder / "out"),
                                rows=["recipe"], terms=["cwd"],
                                overrides=[f"teacher.config={SYNTH / 'teacher.yaml'}",
                                           "teacher.checkpoint=/nonexistent/teacher.pt", "train.epochs=2"])
    results = {}
    for planned in plan.cells:
        (ap50, map_), seconds = CELLS[planned.row][0][planned.seed], CELLS[planned.row][1]
        results[(planned.row, planned.seed)] = scored(planned.cell.name, planned.run_dir, ap50, map_, seconds)
        if planned.row == "recipe":
            cfg = runner.cell_config(planned.cell, planned.run_dir)
            save_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=4)),
                        Path(planned.run_dir) / "config.yaml")
    teacher = scored("teacher", plan.teacher_dir, TEACHER["ap50"], TEACHER["map"], 0.0)
    path = folder / "ablation.json"
    path.write_text(json.dumps(ablate.summarize(plan, teacher, results)))
    return path


def table_rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in text.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]] if cells[0] != "row"}


def test_the_leaderboard_of_a_synthetic_ablation(tool: ModuleType, tmp_path: Path) -> None:
    path = synthetic_ablation(tmp_path)
    text = tool.leaderboard([str(path)], command="detkd ablate X")
    rows = table_rows(text)
    assert list(rows) == ["teacher", "baseline", "cwd", "recipe"]  # by paired gain: cwd +3.0, recipe -1.0
    # columns: description, AP50, mAP, paired AP50 gain [CI], paired mAP gain, gap closed, time, seeds
    cwd, recipe, baseline = rows["cwd"], rows["recipe"], rows["baseline"]
    # cwd - baseline per seed: +3, +1, +5 points: mean 3, sd 2, t(0.975, 2) = 4.3027 -> +-4.97
    # AP50 0.53, 0.61, 0.60: mean 58.0, sd sqrt((25 + 9 + 4) / 2) = 4.36; mAP 33.3 +- 2.5
    # gap closed (58 - 55) / (80 - 55) = 12 %; 150 s / 2 epochs = 75 s against 100 s / 2 = 50 s
    assert cwd[1:] == ["58.0 ± 4.4", "33.3 ± 2.5", "+3.0 [-2.0, +8.0]", "+1.0", "12.0", "75 s (1.50x)", "3/3"]
    # recipe - baseline: -1, -2, 0: mean -1, sd 1 -> +-2.48; mAP -1, 0, 0; 120 s / 4 epochs (its config.yaml) = 30 s
    assert recipe[3:] == ["-1.0 [-3.5, +1.5]", "-0.3", "-4.0", "30 s (0.60x)", "3/3"]
    assert baseline[1:3] == ["55.0 ± 5.0", "32.3 ± 2.5"] and baseline[-2] == "50 s (1.00x)"
    assert rows["teacher"][1:3] == ["80.0", "50.0"] and rows["teacher"][-2] == "-"
    assert "```\ndetkd ablate X\n```" in text and "## synth/distill_small: 3 paired seeds, split `test`" in text


def test_the_command_line_writes_one_table_per_ablation_and_names_a_bad_file(
    tool: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = synthetic_ablation(tmp_path)
    out = tmp_path / "docs" / "LEADERBOARD.md"
    assert tool.main([str(path), str(path), "--out", str(out)]) == 0
    assert len(re.findall(r"^## synth/distill_small", out.read_text(), re.M)) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": {}}))
    assert tool.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: not the ablation.json of detkd ablate" in err
