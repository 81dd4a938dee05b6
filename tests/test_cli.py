"""The command line end to end: the embedded dataset through every reader, stats and evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detkd.cli import main

FORMATS = {"voc": "voc", "kitti": "kitti", "coco": "coco"}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", str(out), "--images", "30", "--seed", "3"]) == 0
    return out


def stats_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()
    assert main(["data", "stats", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "detkd", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("data", "evaluate"):
        assert command in out


def test_synth_reads_back_the_same_objects_in_every_format(synth_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for split in ("train", "test"):
        stats = {
            "voc": stats_json(capsys, "--format", "voc", "--root", str(synth_dir / "voc"), "--split", split),
            "kitti": stats_json(capsys, "--format", "kitti", "--root", str(synth_dir / "kitti"), "--split", split),
            "coco": stats_json(capsys, "--format", "coco", "--root", str(synth_dir / "coco"), "--split", split),
        }
        for key in ("images", "boxes", "per_class"):
            assert stats["voc"][key] == stats["kitti"][key] == stats["coco"][key], (split, key)
        assert stats["voc"]["images"] > 0 and stats["voc"]["boxes"] > 0
        assert stats["voc"]["dropped"] == stats["voc"]["clipped"] == 0


def gt_as_results(synth_dir: Path, split: str) -> list[dict]:
    """Perfect detections, written from the COCO file's ground truth in VOC/KITTI id form."""
    coco = json.loads((synth_dir / "coco" / "annotations" / f"instances_{split}.json").read_text())
    stems = {im["id"]: Path(im["file_name"]).stem for im in coco["images"]}
    return [
        {"image_id": stems[a["image_id"]], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in coco["annotations"]
        if not a["iscrowd"]
    ]


def test_evaluate_perfect_detections_score_one(synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "dets.json"
    results.write_text(json.dumps(gt_as_results(synth_dir, "test")))
    capsys.readouterr()
    code = main(["evaluate", "--format", "voc", "--root", str(synth_dir / "voc"), "--split", "test",
                 "--results", str(results), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"coco", "voc07", "voc"}
    assert metrics["voc"]["mAP"] == pytest.approx(1.0)
    assert metrics["coco"]["AP50"] == pytest.approx(1.0)


def test_evaluate_table_and_kitti_family(synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "dets.json"
    results.write_text(json.dumps(gt_as_results(synth_dir, "test")))
    capsys.readouterr()
    assert main(["evaluate", "--format", "kitti", "--root", str(synth_dir / "kitti"), "--split", "test",
                 "--results", str(results)]) == 0
    table = capsys.readouterr().out
    assert "kitti" in table.lower() and "AP50" in table


@pytest.mark.parametrize(
    "content, problem",
    [("{not json", "dets.json"), (json.dumps([{"image_id": "nope", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]), "nope")],
)
def test_bad_results_file_is_one_line_on_stderr(synth_dir: Path, tmp_path: Path, content: str, problem: str) -> None:
    results = tmp_path / "dets.json"
    results.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "detkd", "evaluate", "--format", "voc", "--root", str(synth_dir / "voc"),
         "--split", "test", "--results", str(results)],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("detkd: error")]
    assert len(lines) == 1 and problem in lines[0] and "Traceback" not in proc.stderr


def test_importing_detkd_and_a_toy_train_open_no_socket(tmp_path: Path, synth_args: list[str],
                                                         no_network_prelude: str) -> None:
    """albumentations looks for a newer version on PyPI when imported (a DNS lookup and an HTTPS
    connection, a warning offline) unless NO_ALBUMENTATIONS_UPDATE is set: detkd sets it. In a
    fresh interpreter, with the network refused before anything is imported."""
    repo = Path(__file__).resolve().parents[1]
    program = no_network_prelude + (
        "import sys\nimport detkd\nimport detkd.cli\ncode = detkd.cli.main(sys.argv[1:])\n"
        "print('network attempts:', attempts)\nsys.exit(3 if attempts else code)\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env.update(PYTHONPATH=os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    args = ["train", str(repo / "configs" / "synth" / "student_small.yaml"), *synth_args, "data.limit=2",
            "train.epochs=1", "train.batch_size=2", "model.min_size=96", "model.max_size=120",
            f"output_dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "network attempts: []" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "detkd", "data", "stats", "--format", "voc", "--root", str(tmp_path / "absent")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "absent" in proc.stderr and "Traceback" not in proc.stderr



def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_bad_image_read_by_a_loader_worker_is_one_line_naming_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "synth"
    assert main(["data", "synth", str(root), "--images", "10", "--profile", "easy"]) == 0
    image = root / "voc" / "JPEGImages" / "000001.png"
    image.write_bytes(image.read_bytes()[:-30])  # truncated: no IEND
    capsys.readouterr()
    config = Path(__file__).resolve().parents[1] / "configs" / "synth" / "student_small.yaml"
    code = main(["train", str(config), f"data.root={root}", "data.synth.images=10", "data.synth.profile=easy", "data.num_workers=1",
                 "train.epochs=1", "train.batch_size=8", f"output_dir={tmp_path / 'run'}", "device=cpu"])
    assert code == 2
    err = one_line_error(capsys)
    assert err == f"detkd: error: {image}: truncated image (no PNG IEND chunk)"


def test_a_file_where_a_folder_belongs_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    repo = Path(__file__).resolve().parents[1]
    for args in (["train", str(repo / "configs" / "synth" / "student_small.yaml"), f"output_dir={blocker / 'run'}"],
                 ["demo", "--out", str(blocker / "demo")],
                 ["ablate", str(repo / "configs" / "synth" / "distill_small.yaml"), "--out", str(blocker / "a")]):
        assert main(args) == 2, args
        err = one_line_error(capsys)
        assert str(blocker) in err and "Not a directory" in err, err


def test_stats_check_images_decodes_every_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "synth"
    assert main(["data", "synth", str(root), "--images", "10", "--profile", "easy"]) == 0
    voc = root / "voc"
    assert main(["data", "stats", "--format", "voc", "--root", str(voc), "--split", "train", "--check-images"]) == 0
    assert "0 bad (all decode whole)" in capsys.readouterr().out
    image = voc / "JPEGImages" / "000002.png"
    image.write_bytes(image.read_bytes()[:-30])
    assert main(["data", "stats", "--format", "voc", "--root", str(voc), "--split", "train", "--check-images",
                 "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["bad_images"] == [f"{image}: truncated image (no PNG IEND chunk)"]


@pytest.mark.parametrize("damage", ["cut in half", "header only"])
def test_stats_lists_the_truncated_jpeg_that_train_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          damage: str) -> None:
    """The header is whole (the reader indexes it), the pixels are not: stats says what training says."""
    import cv2

    from detkd.data.images import read_rgb
    from detkd.errors import DataError

    root = tmp_path / "synth"
    assert main(["data", "synth", str(root), "--images", "10", "--profile", "easy"]) == 0
    voc = root / "voc"
    stem = (voc / "ImageSets" / "Main" / "train.txt").read_text().split()[0]
    png = voc / "JPEGImages" / f"{stem}.png"
    data = cv2.imencode(".jpg", cv2.imread(str(png)))[1].tobytes()
    png.unlink()
    jpeg = voc / "JPEGImages" / f"{stem}.jpg"
    jpeg.write_bytes(data[: len(data) // 2] if damage == "cut in half" else data[: data.index(b"\xff\xda")])
    with pytest.raises(DataError) as refused:
        read_rgb(str(jpeg))  # what a training data loader does with it
    assert str(refused.value) == f"{jpeg}: truncated image (no JPEG end-of-image marker)"
    capsys.readouterr()
    assert main(["data", "stats", "--format", "voc", "--root", str(voc), "--split", "train", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["bad_images"] == [str(refused.value)]
    assert main(["data", "stats", "--format", "voc", "--root", str(voc), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert f"images checked for a cut-off end: 1 bad:\n  {refused.value}" in out
