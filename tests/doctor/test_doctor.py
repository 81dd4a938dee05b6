"""``detkd doctor`` on constructed cases: the verdicts fire and stay silent as they should, the
gradient shares are what separate backward passes give, and the command writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from detkd.cli import main
from detkd.config import DistillConfig, config_to_dict, load_config
from detkd.distill import build as distill_build
from detkd.distill.balance import MODULES, gradient_norms, gradient_shares, module_groups
from detkd.doctor.run import load_student, run_doctor
from detkd.errors import DetkdError
from detkd.models import build_model

REPO = Path(__file__).resolve().parents[2]
LOWRES = ["model.min_size=64", "model.max_size=80"]  # half the trained teacher's 128 px
TINY_WIDTHS = ["model.fpn_channels=64", "model.roi.box_head_width=128"]  # the tiny preset's, as the teacher's


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """One torch thread (tests/conftest.py)."""


def doctor_config(trained_tiny, synth_root: Path, *overrides: str, checkpoint: Path | None = None) -> DistillConfig:
    """configs/synth/distill_small.yaml with Chen's hints through adapters, from scratch: the
    trained tiny teacher (its 8 training images) and a tiny student at half its resolution."""
    data = [f"data.root={synth_root}", "data.synth.images=15", "data.synth.profile=standard", "data.num_workers=0",
            "data.train_split=first8", "data.test_split=first8", "device=cpu", "train.batch_size=2"]
    return load_config(REPO / "configs" / "synth" / "distill_small.yaml",
                       [f"teacher.config={trained_tiny.config}", f"teacher.checkpoint={checkpoint or trained_tiny.checkpoint}",
                        *data, *LOWRES, *TINY_WIDTHS, "student.init=none", "distill.hint.enabled=true",
                        "distill.hint.loss=hint_l2", "distill.hint.adaptation=true", *overrides], schema=DistillConfig)


@pytest.fixture(scope="module")
def trained_report(trained_tiny, synth_root: Path) -> dict:
    return run_doctor(doctor_config(trained_tiny, synth_root), batches=2)


def statuses(report: dict, check: str) -> list[str]:
    return [v["status"] for v in report["verdicts"] if v["check"] == check]


def test_a_trained_teacher_can_teach(trained_report: dict) -> None:
    t = trained_report["teacher"]
    assert t["ap50"] >= 0.5 and t["pos_acc"] >= 0.5 and t["rpn_separation"] >= 0.8, t
    assert "bad" not in statuses(trained_report, "teacher") and "ok" in statuses(trained_report, "teacher")
    assert not any(a["key"] == "teacher.checkpoint" for a in trained_report["advice"])


def test_a_random_teacher_is_called_unable_to_teach(trained_tiny, synth_root: Path, tmp_path: Path) -> None:
    cfg = load_config(trained_tiny.config)
    torch.manual_seed(1)
    random = build_model(cfg.model, 10)
    path = tmp_path / "random.pt"
    torch.save({"model": random.state_dict(), "config": config_to_dict(cfg),
                "classes": torch.load(trained_tiny.checkpoint, weights_only=True)["classes"]}, path)
    report = run_doctor(doctor_config(trained_tiny, synth_root, checkpoint=path), batches=2)
    assert statuses(report, "teacher") == ["bad"]
    bad = next(v for v in report["verdicts"] if v["check"] == "teacher")
    assert "soft labels will mostly add noise" in bad["message"]
    assert report["advice"][0]["key"] == "teacher.checkpoint"  # ranked first
    assert report["teacher"]["rpn_separation"] < 0.8


def test_a_huge_hint_weight_is_named_as_dominating(trained_tiny, synth_root: Path, trained_report: dict) -> None:
    report = run_doctor(doctor_config(trained_tiny, synth_root, "distill.hint.gamma=1000"), batches=1)
    shares = report["terms"]["distill_hint"]["grad_share"]
    assert shares["fpn"] > 0.9 and shares["backbone"] > 0.9
    assert any(v["status"] == "warn" and "distill_hint takes" in v["message"] for v in report["verdicts"])
    advice = next(a for a in report["advice"] if a["key"] == "distill.hint.gamma")
    suggested = float(advice["suggestion"].split()[0])
    assert suggested < 100 and "now 1e+03" in advice["suggestion"]  # a weight that gives it about 30 %
    assert not any("distill_hint takes" in v["message"] for v in trained_report["verdicts"])


def test_a_level_pairing_off_by_one_is_caught(trained_tiny, synth_root: Path, trained_report: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    right = trained_report["alignment"]
    assert right["mode"] == "shift" and right["rpn_gt_score_gap"] < 0.02 and right["rpn_anchor_iou"] > 0.9
    real = distill_build.pair_levels
    monkeypatch.setattr(distill_build, "pair_levels", lambda s, t, scale: real(s, t, scale / 2))  # one level too far
    wrong = run_doctor(doctor_config(trained_tiny, synth_root), batches=2)
    assert wrong["alignment"]["mapped_gt_score_gap"] > 0.1
    assert any(v["status"] == "bad" and v["check"] == "alignment" for v in wrong["verdicts"])


def test_gradient_shares_sum_to_one_and_equal_separate_backward_passes(trained_tiny, synth_root: Path) -> None:
    from detkd.data.dataset import collate
    from detkd.data.from_config import build_eval_dataset
    from detkd.distill.build import build_distill_task
    from detkd.distill.teacher import run_teacher

    cfg = doctor_config(trained_tiny, synth_root)
    dataset = build_eval_dataset(cfg.data, split=cfg.data.train_split)
    images, targets = collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    task = build_distill_task(cfg, len(dataset.classes) + 1)
    task.module.train()
    losses = task.losses(task.module(images, targets), run_teacher(task.teacher, images))
    groups = module_groups(task.module.student)
    norms = gradient_norms(losses, task.loss_weights, groups)
    shares = gradient_shares(norms)
    for module in MODULES:
        got = [s[module] for s in shares.values() if s[module] is not None]
        assert sum(got) == pytest.approx(1.0, abs=1e-9), module
    for term, value in losses.items():  # each term alone, through .backward()
        task.module.zero_grad(set_to_none=True)
        (task.loss_weights.get(term, 1.0) * value).backward(retain_graph=True)
        for module, params in groups.items():
            norm = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None) ** 0.5
            assert norms[term][module] == pytest.approx(norm, rel=1e-6, abs=1e-9), (term, module)


def test_cli_json_keys_and_no_writes(trained_tiny, synth_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    def listing(folder: Path) -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in folder.rglob("*")}

    teacher_dir, run_dir = trained_tiny.checkpoint.parent, tmp_path / "run"
    before = listing(teacher_dir)
    config = tmp_path / "distill.yaml"
    from detkd.config import save_config

    save_config(doctor_config(trained_tiny, synth_root, f"output_dir={run_dir}"), config)
    assert main(["doctor", str(config), "--batches", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["teacher"]) >= {"ap50", "pos_p_true", "pos_acc", "pos_argmax_bg", "neg_p_bg", "rpn_separation"}
    assert set(report["alignment"]) >= {"pairing", "anchor_match_share", "mapped_gt_score_gap"}
    for term in ("loss_classifier", "distill_hint", "distill_rcn_cls"):
        entry = report["terms"][term]
        assert {"raw", "weighted"} <= set(entry) and set(entry["grad_share"]) == set(MODULES)
    assert all(set(a) == {"key", "suggestion", "evidence"} for a in report["advice"])
    assert listing(teacher_dir) == before and not run_dir.exists()
    out = tmp_path / "doctor"
    assert main(["doctor", str(config), "--batches", "1", "--out", str(out)]) == 0
    assert "## Verdicts" in (out / "doctor.md").read_text() and (out / "doctor.png").stat().st_size > 10_000
    assert json.loads((out / "doctor.json").read_text())["terms"].keys() == report["terms"].keys()
    assert "[" in capsys.readouterr().out  # the terminal table's status tags
    assert main(["doctor", str(REPO / "configs" / "synth" / "teacher.yaml")]) == 2  # not a distillation config
    assert not os.path.exists(run_dir)


@pytest.mark.parametrize("overrides", [["distill.hint.loss=cwd"], ["distill.hint.loss=fgd"], ["distill.hint.loss=mgd"],
                                       ["distill.rcn_cls.loss=dkd", "distill.rpn_cls.enabled=false"]])
def test_the_new_terms_gradient_shares_are_reported(overrides: list[str], teacher_files, synth_root: Path) -> None:
    """CWD, FGD, MGD (as the hint) and DKD (as the RoI head's soft term) get their gradient
    shares like every other term (a random teacher: the shares need no competent one)."""
    config, checkpoint = teacher_files
    data = [f"data.root={synth_root}", "data.synth.images=15", "data.synth.profile=standard", "data.num_workers=0",
            "data.train_split=first8", "data.test_split=first8", "device=cpu", "train.batch_size=2", "data.classes=null"]
    cfg = load_config(REPO / "configs" / "synth" / "distill_small.yaml",
                      [f"teacher.config={config}", f"teacher.checkpoint={checkpoint}", *data, *LOWRES,
                       "distill.hint.enabled=true", *overrides], schema=DistillConfig)
    report = run_doctor(cfg, batches=1)
    term, module = ("distill_rcn_cls", "roi_heads") if "dkd" in overrides[0] else ("distill_hint", "fpn")
    entry = report["terms"][term]
    assert entry["raw"] > 0 and entry["grad_share"][module] > 0 and entry["grad_norm"][module] > 0
    for m in MODULES:
        got = [t["grad_share"][m] for t in report["terms"].values() if t["grad_share"][m] is not None]
        assert not got or sum(got) == pytest.approx(1.0, abs=1e-9), m


def test_a_student_checkpoint_loads_its_module_or_its_model(tmp_path: Path) -> None:
    """``--student``: a distillation's ``module`` (student and adapters), else the ``model`` (or a
    plain state dict) into the student; anything else does not fit, naming the file."""
    task = torch.nn.Module()
    task.module = torch.nn.Module()
    task.module.student, task.module.adapters = torch.nn.Linear(2, 2), torch.nn.Linear(1, 1)
    trained = torch.nn.Module()
    trained.student, trained.adapters = torch.nn.Linear(2, 2), torch.nn.Linear(1, 1)
    files = {"module.pt": {"module": trained.state_dict(), "model": trained.student.state_dict()},
             "model.pt": {"model": trained.student.state_dict()}, "plain.pt": trained.student.state_dict()}
    for name, state in files.items():
        torch.save(state, tmp_path / name)
        task.module.adapters.weight.data.zero_()
        load_student(task, str(tmp_path / name))
        assert torch.equal(task.module.student.weight, trained.student.weight), name
        assert torch.equal(task.module.adapters.weight, trained.adapters.weight) == (name == "module.pt"), name
    torch.save({"model": torch.nn.Linear(3, 3).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(DetkdError, match=r"other\.pt: does not fit this config's student"):
        load_student(task, str(tmp_path / "other.pt"))
