"""``detkd train`` and ``detkd eval`` from the command line: real data, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detkd.cli import main

REPO = Path(__file__).resolve().parents[2]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_config_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing)]) == 2
    assert error_line(capsys) == f"detkd: error: {missing}: config file not found"
    assert main(["eval", str(missing), "--checkpoint", "x.pt"]) == 2
    assert "nope.yaml" in error_line(capsys)


def test_bad_checkpoint_and_override_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO / "configs" / "synth" / "student_small.yaml"
    assert main(["eval", str(config), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert error_line(capsys).endswith("missing.pt: checkpoint not found")
    assert main(["train", str(config), "train.lrr=0.1"]) == 2
    assert "train.lrr" in error_line(capsys)


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    config = REPO / "configs" / "synth" / "student_small.yaml"
    assert main(["train", str(config), f"output_dir={run}"]) == 2
    assert "--resume" in error_line(capsys)


def test_help_has_examples() -> None:
    for command in ("train", "eval"):
        out = subprocess.run([sys.executable, "-m", "detkd", command, "--help"], capture_output=True, text=True,
                             check=True).stdout
        assert "examples:" in out and f"detkd {command} configs/" in out


def test_train_then_eval_on_bccd(bccd_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "configs" / "bccd" / "student_small.yaml")
    common = [f"data.root={bccd_root}", "data.num_workers=0", "device=cpu", "model.min_size=128", "model.max_size=171"]
    run = tmp_path / "bccd"
    assert main(["train", config, *common, f"output_dir={run}", "data.limit=4", "train.epochs=1",
                 "train.batch_size=2", "train.eval_every=0"]) == 0
    assert (run / "config.yaml").is_file() and (run / "last.pt").is_file() and (run / "metrics.jsonl").is_file()
    capsys.readouterr()

    assert main(["eval", config, *common, "--checkpoint", str(run / "last.pt")]) == 0
    table = capsys.readouterr().out
    for word in ("RBC", "WBC", "Platelets", "AP50"):
        assert word in table, table
    results = json.loads((run / "last_test_results.json").read_text())
    test_ids = set((bccd_root / "ImageSets" / "Main" / "test.txt").read_text().split())
    assert results and {r["image_id"] for r in results} <= test_ids
    assert {r["category_id"] for r in results} <= {1, 2, 3}
    assert all(len(r["bbox"]) == 4 and 0 <= r["score"] <= 1 for r in results)

    # the data's own classes (data.classes null: VOC's 20) are not the checkpoint's: refused, not scored "-"
    assert main(["eval", config, *common, "data.classes=null", "--checkpoint", str(run / "last.pt")]) == 2
    assert "trained on classes ['RBC', 'WBC', 'Platelets'], the config's data has ['aeroplane'" in error_line(capsys)

    out = tmp_path / "dets.json"
    assert main(["eval", config, *common, "--checkpoint", str(run / "last.pt"), "--json", "--results", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"coco", "voc07", "voc"} <= set(metrics) and 0 <= metrics["voc"]["mAP"] <= 1
    assert json.loads(out.read_text()) == results


def test_overrides_may_follow_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO / "configs" / "synth" / "teacher.yaml"
    missing = tmp_path / "missing.pt"
    code = main(["eval", str(config), "--checkpoint", str(missing), "data.synth.images=20"])
    err = capsys.readouterr().err
    assert code == 2 and "unrecognized" not in err and "missing.pt" in err
    with pytest.raises(SystemExit):
        main(["eval", str(config), "--checkpoint", str(missing), "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
