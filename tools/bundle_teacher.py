"""Make detkd/assets/demo_teacher.pt and its sidecar from a finished run of configs/synth/teacher.yaml.

    python tools/bundle_teacher.py runs/synth/teacher/last.pt \
        --command "detkd train configs/synth/teacher.yaml" [--out detkd/assets]

Scores the checkpoint on the demo's test split (the students' data: configs/synth/student_small.yaml)
and on the fixed slice the test suite checks (the first --check-first images of that split),
then writes the float16 weights and the sidecar (:func:`detkd.experiments.bundled.write_bundled`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from detkd.config import load_config
from detkd.data.synth import ensure_synth
from detkd.engine.inference import evaluate_checkpoint
from detkd.experiments.bundled import ASSET_DIR, write_bundled

REPO = Path(__file__).resolve().parents[1]


def score(checkpoint: str, root: Path, images: int, split: str) -> dict:
    """VOC AP50 and COCO mAP of the checkpoint on ``split`` of the embedded data in ``root``."""
    cfg = load_config(REPO / "configs" / "synth" / "teacher.yaml", [f"data.root={root}", f"data.synth.images={images}"])
    with tempfile.TemporaryDirectory() as tmp:
        metrics = evaluate_checkpoint(cfg, checkpoint, split=split, results_path=f"{tmp}/r.json").metrics
    return {"ap50": metrics["voc"]["mAP"], "map": metrics["coco"]["AP"], "per_class_ap50": metrics["voc"]["per_class"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="last.pt of the teacher's run")
    parser.add_argument("--command", required=True, help="the exact command that trained it (recorded)")
    parser.add_argument("--out", default=str(ASSET_DIR), help="the asset folder (default: detkd/assets)")
    parser.add_argument("--check-first", type=int, default=24, help="test images of the checked slice")
    parser.add_argument("--train-seconds", type=float, help="the training's wall time (recorded)")
    args = parser.parse_args()
    students = load_config(REPO / "configs" / "synth" / "student_small.yaml")
    images, profile = students.data.synth.images, students.data.synth.profile
    with tempfile.TemporaryDirectory() as tmp:  # the students' data, generated as the test suite does
        root = Path(ensure_synth(f"{tmp}/data", images, students.data.synth.seed, profile=profile))
        main_dir = root / "voc" / "ImageSets" / "Main"
        ids = (main_dir / "test.txt").read_text().split()[: args.check_first]
        (main_dir / "slice.txt").write_text("\n".join(ids) + "\n")
        test = {"split": "test", "images": images, "profile": profile, **score(args.checkpoint, root, images, "test")}
        check = score(args.checkpoint, root, images, "slice")
    made = write_bundled(args.checkpoint, args.out, args.command, test, args.train_seconds,
                         {"images": images, "profile": profile, "first": args.check_first, "ap50": check["ap50"]})
    print(json.dumps({k: made.sidecar[k] for k in ("sha256", "test", "check", "epochs", "steps")}, indent=1))
    print(f"wrote {made.path} ({Path(made.path).stat().st_size / 2**20:.1f} MB); trained {made.sidecar['epochs']} epochs")


if __name__ == "__main__":
    main()
