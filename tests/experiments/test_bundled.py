"""The bundled demo teacher: its sidecar and checksum are checked, a damaged asset is refused
with the file named and the way to rebuild it, and the shipped one still scores what it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detkd.config import config_to_dict, load_config
from detkd.data.synth import SYNTH_CLASSES
from detkd.errors import DetkdError
from detkd.experiments import bundled
from detkd.models import build_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def asset(tmp_path: Path) -> Path:
    """A bundled-teacher folder made by write_bundled from a checkpoint of random weights."""
    cfg = load_config(REPO / "configs" / "synth" / "teacher.yaml", ["model.min_size=64", "model.max_size=80"])
    torch.manual_seed(0)
    model = build_model(cfg.model, len(SYNTH_CLASSES) + 1)
    ckpt = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": list(SYNTH_CLASSES),
                "epoch": 30, "step": 7200}, ckpt)
    folder = tmp_path / "assets"
    made = bundled.write_bundled(str(ckpt), folder, "detkd train configs/synth/teacher.yaml", {"ap50": 0.5})
    assert made.sidecar["sha256"] == bundled.sha256_of(folder / bundled.TEACHER_FILE)
    weights = torch.load(folder / bundled.TEACHER_FILE, weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    model.load_state_dict(weights)  # float16 weights load into the float32 model
    return folder


def test_a_good_asset_is_read_and_fits_its_own_config(asset: Path) -> None:
    teacher = bundled.bundled_teacher(asset)
    assert teacher.path == str(asset / bundled.TEACHER_FILE) and teacher.test_ap50 == 0.5
    cfg = load_config(REPO / "configs" / "synth" / "teacher.yaml", ["model.min_size=64", "model.max_size=80"])
    assert bundled.fits(teacher, cfg) is None
    other = load_config(REPO / "configs" / "synth" / "teacher.yaml")
    assert "model section differs" in bundled.fits(teacher, other)
    assert "not on voc data" in bundled.fits(teacher, load_config(REPO / "configs" / "bccd" / "teacher.yaml"))


@pytest.mark.parametrize("damage", ["flip a byte", "no weights", "no sidecar", "bad sidecar", "no sha"])
def test_a_damaged_asset_is_refused_naming_the_file_and_the_rebuild(asset: Path, damage: str) -> None:
    weights, sidecar = asset / bundled.TEACHER_FILE, asset / bundled.SIDECAR_FILE
    if damage == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "no weights":
        weights.unlink()
    elif damage == "no sidecar":
        sidecar.unlink()
    elif damage == "bad sidecar":
        sidecar.write_text("{not json")
    else:
        sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "sha256"}))
    with pytest.raises(DetkdError) as err:
        bundled.bundled_teacher(asset)
    message = str(err.value)
    named = str(weights) if damage in ("flip a byte", "no weights") else str(sidecar)
    assert message.startswith(named) and "detkd demo --train-teacher" in message


def test_the_shipped_teacher_still_scores_what_its_sidecar_says(tmp_path: Path) -> None:
    """The asset in detkd/assets against its sidecar's figure on a fixed slice of the demo's test
    split (its first images), within CPU nondeterminism: a stale asset fails here."""
    from detkd.data.synth import ensure_synth
    from detkd.engine.inference import evaluate_checkpoint

    teacher = bundled.bundled_teacher()
    check = teacher.sidecar["check"]  # {"images", "profile", "first", "ap50"}
    root = Path(ensure_synth(str(tmp_path / "data"), check["images"], 0, profile=check["profile"]))
    main = root / "voc" / "ImageSets" / "Main"
    (main / "slice.txt").write_text("\n".join((main / "test.txt").read_text().split()[: check["first"]]) + "\n")
    cfg = load_config(REPO / "configs" / "synth" / "teacher.yaml",
                      [f"data.root={root}", f"data.synth.images={check['images']}", "data.num_workers=0", "device=cpu"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = evaluate_checkpoint(cfg, teacher.path, split="slice", results_path=str(tmp_path / "slice.json"))
    finally:
        torch.set_num_threads(threads)
    assert outcome.metrics["voc"]["mAP"] == pytest.approx(check["ap50"], abs=0.01)
    assert teacher.test_ap50 >= 0.70  # the bar on the whole test split (docs/RESULTS.md)


# --- the asset checked wherever it is loaded; non-finite weights refused by the one reader -----

TEACHER_CONFIG = REPO / "configs" / "synth" / "teacher.yaml"
SMALL_INPUT = ("model.min_size=64", "model.max_size=80")  # the size of the `asset` fixture's teacher


def eval_and_distill_errors(cli_error, checkpoint: Path, synth_args: list[str], out: Path) -> list[str]:
    """The error lines of `detkd eval` and `detkd distill` (its default teacher replaced) given ``checkpoint``."""
    return [
        cli_error("eval", TEACHER_CONFIG, *SMALL_INPUT, *synth_args, "--checkpoint", checkpoint),
        cli_error("distill", REPO / "configs" / "synth" / "distill_small.yaml", f"teacher.config={TEACHER_CONFIG}",
                  f"teacher.checkpoint={checkpoint}", f"output_dir={out}", *synth_args),
    ]


def test_the_bundled_teacher_is_verified_by_every_command_that_loads_it(asset: Path, monkeypatch, cli_error,
                                                                         synth_args: list[str], tmp_path: Path) -> None:
    """A weights file whose damage the safe loader cannot see (one mantissa bit of a float16 weight)
    is refused by its checksum in `detkd eval` and `detkd distill`, not only in the demo."""
    from detkd.utils.checkpoint import load_checkpoint

    weights = asset / bundled.TEACHER_FILE
    monkeypatch.setattr(bundled, "ASSET_DIR", asset)  # the asset fixture stands for detkd/assets
    assert load_checkpoint(weights)["classes"] == list(SYNTH_CLASSES)  # the intact asset loads
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    damaged = torch.load(weights, weights_only=True)["model"]
    assert all(bool(torch.isfinite(v).all()) for v in damaged.values() if v.is_floating_point())  # loads, finite
    with pytest.raises(DetkdError, match="SHA-256"):
        load_checkpoint(asset / ".." / asset.name / bundled.TEACHER_FILE)  # by any name
    for line in eval_and_distill_errors(cli_error, weights, synth_args, tmp_path / "run"):
        assert line.startswith(f"detkd: error: {weights}: SHA-256") and "detkd demo --train-teacher" in line


def test_a_checkpoint_with_a_nan_weight_is_refused_naming_the_file_and_the_tensor(
        asset: Path, cli_error, synth_args: list[str], tmp_path: Path) -> None:
    """A copy of the asset with one NaN weight: no AP of 0 with exit status 0, no blame on train.lr."""
    state = torch.load(asset / bundled.TEACHER_FILE, weights_only=True)
    name = [k for k, v in state["model"].items() if v.is_floating_point()][5]
    state["model"][name].view(-1)[3] = float("nan")
    copy = tmp_path / "teacher_copy.pt"
    torch.save(state, copy)
    for line in eval_and_distill_errors(cli_error, copy, synth_args, tmp_path / "run"):
        assert line == (f"detkd: error: {copy}: refused: 1 tensor(s) hold NaN or inf (first: model.{name}); the file "
                        "is damaged, or was saved from a run that diverged")
