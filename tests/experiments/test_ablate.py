"""``detkd ablate``: the grid's rows switch the right terms, a real toy ablation writes every output,
and a second run reads the cells back (or resumes a killed one) instead of retraining."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from detkd.cli import main
from detkd.config import Config, DistillConfig, load_config
from detkd.data.synth import ensure_synth
from detkd.errors import DetkdError
from detkd.experiments import ablate, runner
from detkd.experiments.ablate import GRID, ROWS, TERMS, plan_ablation, run_ablation, select_rows

REPO = Path(__file__).resolve().parents[2]
SYNTH = REPO / "configs" / "synth"
NO_CHECKPOINT = "teacher.checkpoint=/nonexistent/teacher.pt"
SIZE = "{min_size: 96, max_size: 144}"
# distill_small.yaml's student as these tests were written for: the tiny preset's widths (64 FPN
# channels: hints without adaptation n/a), from scratch, Chen's hints through adapters
AS_TINY = ["model.fpn_channels=64", "model.roi.box_head_width=128", "student.init=none", "distill.hint.adaptation=true"]


def grid_plan(tmp_path: Path, kind: str = "small", *overrides: str, **options) -> ablate.AblationPlan:
    """A plan of configs/synth/distill_<kind>.yaml; nothing is trained."""
    tiny = AS_TINY if kind == "small" else []
    common = [f"teacher.config={SYNTH / 'teacher.yaml'}", NO_CHECKPOINT, *tiny, *overrides]
    return plan_ablation(str(SYNTH / f"distill_{kind}.yaml"), out_dir=str(tmp_path / "out"), overrides=common, **options)


def configs_by_row(plan: ablate.AblationPlan, seed: int = 0) -> dict[str, Config]:
    return {c.row: runner.cell_config(c.cell, c.run_dir) for c in plan.cells if c.seed == seed}


def enabled(cfg: DistillConfig) -> set[str]:
    return {t for t in TERMS if getattr(cfg.distill, t).enabled}


# --- the grid (configs only) -------------------------------------------------------------------


def test_paper_rows_pin_the_paper_settings_and_recipe_keeps_the_config(tmp_path: Path) -> None:
    # the config's own switches and values must not leak into the paper's rows; the recipe row
    # is the config as it is, a variant the config with its overrides
    plan = grid_plan(tmp_path, "small", "distill.hint.enabled=true", "distill.rcn_reg.bounded=false",
                     "distill.rcn_cls.mu=0.7", "distill.rpn_reg.nu=0.25", "distill.hint.gamma=0.9",
                     "distill.rcn_cls.mode=add", "distill.hint.mask=objects", seeds=2, rows=list(GRID),
                     variants=[["g2", "distill.hint.gamma=2", "distill.rpn_cls.enabled=false"]])
    cfgs = configs_by_row(plan)
    assert list(cfgs) == ["baseline", "cls", "cls_w", "l2", "l2_b", "hints_a", "all", "pkd", "recipe", "distill", "g2"]
    assert type(cfgs["baseline"]) is Config  # the student alone, no teacher
    expected = {"cls": {"rcn_cls", "rpn_cls"}, "cls_w": {"rcn_cls", "rpn_cls"}, "l2": {"rcn_reg", "rpn_reg"},
                "l2_b": {"rcn_reg", "rpn_reg"}, "hints_a": {"hint"}, "all": set(TERMS), "pkd": {"hint"},
                "distill": {"rcn_cls", "rpn_cls", "rcn_reg", "rpn_reg"}}
    for row, terms in expected.items():
        cfg = cfgs[row]
        assert isinstance(cfg, DistillConfig) and enabled(cfg) == terms, row
        d = cfg.distill
        pinned = {"rcn_cls": (d.rcn_cls.mu, d.rcn_cls.mode), "rpn_cls": (d.rpn_cls.mu, d.rpn_cls.mode),
                  "rcn_reg": d.rcn_reg.nu, "rpn_reg": d.rpn_reg.nu, "hint": (d.hint.gamma, d.hint.mask)}
        paper = {"rcn_cls": (0.5, "interpolate"), "rpn_cls": (0.5, "interpolate"), "rcn_reg": 0.5, "rpn_reg": 0.5,
                 "hint": (6.0 if row == "pkd" else 0.5, "none")}
        assert {t: pinned[t] for t in terms} == {t: paper[t] for t in terms}, row
        assert cfg.teacher.checkpoint == str(tmp_path / "out" / "teacher" / "last.pt")
    recipe, g2 = cfgs["recipe"].distill, cfgs["g2"].distill
    assert enabled(cfgs["recipe"]) == set(TERMS) and not recipe.rcn_reg.bounded
    assert (recipe.rcn_cls.mu, recipe.rcn_cls.mode, recipe.hint.gamma, recipe.hint.mask) == (0.7, "add", 0.9, "objects")
    assert enabled(cfgs["g2"]) == set(TERMS) - {"rpn_cls"} and (g2.hint.gamma, g2.rcn_cls.mu) == (2.0, 0.7)
    assert [cfgs[r].distill.rcn_cls.bg_weight for r in ("cls", "cls_w", "all", "distill")] == [1.0, 1.5, 1.5, 1.5]
    assert [cfgs[r].distill.rpn_cls.bg_weight for r in ("cls", "cls_w")] == [1.0, 1.5]
    assert all(cfgs[r].distill.rcn_cls.loss == "soft_ce" for r in ("cls", "cls_w", "all"))
    assert [cfgs[r].distill.rcn_reg.bounded for r in ("l2", "l2_b", "all")] == [False, True, True]
    assert [cfgs[r].distill.rpn_reg.bounded for r in ("l2", "l2_b")] == [False, True]
    assert cfgs["hints_a"].distill.hint.adaptation and cfgs["all"].distill.hint.adaptation
    assert (cfgs["all"].distill.hint.loss, cfgs["pkd"].distill.hint.loss) == ("hint_l2", "pkd")
    seeds = {(c.row, c.seed): runner.cell_config(c.cell, c.run_dir).seed for c in plan.cells}
    assert seeds[("cls_w", 1)] == 1 and seeds[("baseline", 0)] == 0
    run_dirs = {(c.row, c.seed): c.run_dir for c in plan.cells}
    assert run_dirs[("all", 1)] == str(tmp_path / "out" / "all" / "seed1")
    assert all(c.cell.splits == ("train", "test") for c in plan.cells)
    for row in ROWS.values():  # every paper row switches all five terms explicitly
        switches = [o.split(".")[1] for o in row.overrides() if ".enabled=" in o]
        assert row.plain or row.terms is None or switches == list(TERMS), row.name


def test_variants_alone_run_with_the_baseline_and_bad_variants_are_refused(tmp_path: Path) -> None:
    plan = grid_plan(tmp_path, "small", variants=[["add", "distill.rcn_cls.mode=add"]])
    assert plan.rows == ["baseline", "add"]
    assert select_rows(["all"], variants=["v"]) == ["baseline", "all", "v"]
    for bad, match in ((["distill.hint.gamma=2"], "give a row name first"), (["all", "x=1"], "must be new"),
                       (["v", "gamma"], "is not KEY=VALUE")):
        with pytest.raises(DetkdError, match=match):
            grid_plan(tmp_path, "small", variants=[bad])
    with pytest.raises(DetkdError, match="unknown key 'distill.hint.gama'"):
        grid_plan(tmp_path, "small", variants=[["v", "distill.hint.gama=2"]])


def test_hints_without_adaptation_need_equal_fpn_channels(tmp_path: Path) -> None:
    small = grid_plan(tmp_path, "small")  # tiny student (64 FPN channels), small teacher (128)
    assert small.unavailable == {"hints": "channels differ: 64 vs 128"}
    assert "hints" in small.rows and not any(c.row == "hints" for c in small.cells)
    lowres = grid_plan(tmp_path, "lowres")  # the teacher's architecture at half the resolution
    assert lowres.unavailable == {}
    cfg = configs_by_row(lowres)["hints"]
    assert enabled(cfg) == {"hint"} and cfg.distill.hint.adaptation is False


def test_extra_terms_subsets_and_unknown_names(tmp_path: Path) -> None:
    plan = grid_plan(tmp_path, "small", rows=["cls_w", "all"], terms=["hinton", "dist"])
    assert plan.rows == ["baseline", "cls_w", "all", "hinton", "dist"]
    cfgs = configs_by_row(plan)
    hinton, dist = cfgs["hinton"].distill, cfgs["dist"].distill
    assert enabled(cfgs["hinton"]) == {"rcn_cls", "rpn_cls"}
    assert hinton.rcn_cls.loss == hinton.rpn_cls.loss == "hinton" and hinton.rcn_cls.temperature > 1
    assert enabled(cfgs["dist"]) == {"rcn_cls"} and dist.rcn_cls.loss == "dist"  # DIST on the RPN is refused
    assert select_rows(["all"]) == ["baseline", "all"]
    with pytest.raises(DetkdError, match=r"--terms: unknown row 'dsit' \(known: hinton, dist, cwd, fgd, mgd, dkd, "
                       r"recipe_cwd, recipe_fgd, recipe_mgd, recipe_dkd\)"):
        select_rows(terms=["dsit"])
    with pytest.raises(DetkdError, match=r"--rows: unknown row 'clsw' \(known: baseline, cls, cls_w"):
        select_rows(["clsw"])


def test_the_newer_methods_pin_their_papers_settings_alone_and_with_the_recipe(tmp_path: Path) -> None:
    terms = ["cwd", "fgd", "mgd", "dkd", "recipe_cwd", "recipe_fgd", "recipe_mgd", "recipe_dkd"]
    plan = grid_plan(tmp_path, "small", "distill.hint.gamma=0.9", rows=["recipe"], terms=terms)
    cfgs = configs_by_row(plan)
    assert plan.rows == ["baseline", "recipe", *terms]
    recipe = cfgs["recipe"].distill
    for name in ("cwd", "fgd", "mgd"):
        alone, added = cfgs[name].distill, cfgs[f"recipe_{name}"].distill
        assert enabled(cfgs[name]) == {"hint"} and enabled(cfgs[f"recipe_{name}"]) == enabled(cfgs["recipe"]) | {"hint"}
        for hint in (alone.hint, added.hint):
            assert (hint.loss, hint.level_weighting, hint.adaptation, hint.mask) == (name, "sum", True, "none")
            assert hint.gamma == (5.0 if name == "cwd" else 1.0)  # not the common override's 0.9
        assert added.rcn_cls == recipe.rcn_cls and added.rcn_reg == recipe.rcn_reg  # the recipe's other terms
    fgd, mgd = cfgs["fgd"].distill.hint, cfgs["mgd"].distill.hint
    assert (fgd.fgd_temperature, fgd.fgd_alpha, fgd.fgd_beta, fgd.fgd_gamma, fgd.fgd_lambda) == (0.5, 5e-5, 2.5e-5, 5e-5, 5e-7)
    assert (mgd.mgd_alpha, mgd.mgd_ratio, cfgs["cwd"].distill.hint.cwd_tau) == (5e-7, 0.45, 1.0)
    for row in ("dkd", "recipe_dkd"):
        cls = cfgs[row].distill.rcn_cls
        assert (cls.loss, cls.mode, cls.weight, cls.temperature, cls.dkd_alpha, cls.dkd_beta) == ("dkd", "add", 1.0, 1.0, 1.0, 0.25)
    assert enabled(cfgs["dkd"]) == {"rcn_cls"} and cfgs["recipe_dkd"].distill.rpn_cls == recipe.rpn_cls


def test_a_student_init_override_reaches_the_students_not_the_teacher(tmp_path: Path) -> None:
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"")
    plan = grid_plan(tmp_path, "lowres", f"teacher.checkpoint={checkpoint}", "student.init=teacher", seeds=1)
    assert "student.init=teacher" not in ablate.teacher_overrides(plan.overrides)
    runner.cell_config(plan.teacher, plan.teacher_dir)  # the teacher's config has no student section
    cfgs = configs_by_row(plan)
    assert cfgs["baseline"].model.checkpoint == str(checkpoint)  # the plain baseline starts there too
    assert {cfg.student.init for row, cfg in cfgs.items() if row != "baseline"} == {"teacher"}


def test_teacher_split_and_refused_overrides(tmp_path: Path) -> None:
    plan = grid_plan(tmp_path, "small", "data.limit=5", "model.min_size=96", split="val", seeds=1)
    assert plan.teacher_trained and plan.teacher.checkpoint is None
    teacher = runner.cell_config(plan.teacher, plan.teacher_dir)
    teacher_size = load_config(REPO / "configs" / "synth" / "teacher.yaml").model.min_size
    assert teacher_size != 96  # model.* overrides are the student's, not the teacher's
    assert (teacher.data.test_split, teacher.data.limit, teacher.model.min_size, teacher.seed) == ("val", 5, teacher_size, 0)
    assert all(cfg.data.test_split == "val" and cfg.model.min_size == 96 for cfg in configs_by_row(plan).values())
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"")
    given = grid_plan(tmp_path, "small", f"teacher.checkpoint={checkpoint}", seeds=1)
    assert not given.teacher_trained and given.teacher.checkpoint == str(checkpoint)
    assert configs_by_row(given)["cls"].teacher.checkpoint == str(checkpoint)
    with pytest.raises(DetkdError, match="seed is set by ablate"):
        grid_plan(tmp_path, "small", "seed=3")
    with pytest.raises(DetkdError, match="not a distillation config"):
        plan_ablation(str(SYNTH / "teacher.yaml"))
    assert main(["ablate", str(SYNTH / "distill_small.yaml"), "--rows", "nope"]) == 2


# --- a real toy ablation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, log_on_one_thread) -> Iterator[dict]:
    """A toy ablation (96 px, 8 images, 2 epochs of batches of 2, 1 seed): a teacher trained as a
    cell, the baseline and cls_w; hints is n/a (64 vs 128 channels)."""
    folder = tmp_path_factory.mktemp("ablate")
    root = ensure_synth(str(folder / "synth"), 15, 0, profile="easy")
    (folder / "teacher.yaml").write_text(f"_base_: {SYNTH / 'teacher.yaml'}\nmodel: {SIZE}\n")
    (folder / "distill.yaml").write_text(f"_base_: {SYNTH / 'distill_small.yaml'}\nmodel: {SIZE}\nteacher: "
                                         f"{{config: {folder / 'teacher.yaml'}, checkpoint: {folder / 'none.pt'}}}\n")
    overrides = [*AS_TINY, f"data.root={root}", "data.synth.images=15", "data.synth.profile=easy", "data.num_workers=0",
                 "device=cpu", "train.epochs=2", "data.limit=8", "train.batch_size=2", "train.lr=3e-3",
                 "train.warmup_iters=1", "train.log_every=100"]
    args = {"config": str(folder / "distill.yaml"), "seeds": 1, "out_dir": str(folder / "out"),
            "rows": ["cls_w", "hints"], "overrides": overrides}
    with log_on_one_thread() as log:
        summary = run_ablation(plan_ablation(**args))
        yield {"args": args, "out": folder / "out", "summary": summary, "log": log}


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["row"]: r for r in csv.DictReader(f)}


def test_toy_ablation_writes_every_output(toy: dict) -> None:
    out, summary = toy["out"], toy["summary"]
    for name in ablate.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "ablation.json").read_text()) == summary
    assert [(c["row"], c["seed"]) for c in summary["cells"]] == [("baseline", 0), ("cls_w", 0)]
    for cell in summary["cells"]:
        assert all(isinstance(cell[k][s], float) for k in ("ap50", "map") for s in ("train", "test"))
    table4 = (out / "table4.md").read_text()
    for row in ("teacher", "baseline", "cls_w"):
        assert re.search(rf"^\| {row} \|.*\| \d+\.\d", table4, re.M), row
    assert re.search(r"^\| cls_w \| CLS-W: .* \| \d+\.\d ± \d+\.\d \| \d+\.\d ± \d+\.\d \| [+-]\d+\.\d \|.* \| 1/1 \|$",
                     table4, re.M), table4
    assert "| hints | Hints: FPN hints without adaptation layers | n/a (channels differ: 64 vs 128) |" in table4
    table5 = (out / "table5.md").read_text()
    assert re.search(r"^\| baseline \| \d+\.\d ± \d+\.\d \| \d+\.\d ± \d+\.\d \| \+0\.0 \| \+0\.0 \|  \|  \| 1/1 \|$",
                     table5, re.M), table5
    paired = summary["rows"]["cls_w"]["paired"]["ap50"]["test"]  # one seed: the difference, no interval
    cells = {c["row"]: c for c in summary["cells"]}
    assert paired["n"] == 1 and paired["low"] is None
    assert paired["mean"] == pytest.approx(cells["cls_w"]["ap50"]["test"] - cells["baseline"]["ap50"]["test"])
    image = mpimg.imread(out / "ablation.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0.01
    assert any(line.startswith("[cell 2/3] baseline seed 0 (elapsed") for line in toy["log"])
    assert any("teacher: teacher.checkpoint" in line and "not found: training the teacher" in line
               for line in toy["log"])


def test_paired_gain_and_interval_on_known_numbers() -> None:
    def cell(seed: int, test: float | None) -> dict:
        return {"seed": seed, "ap50": {"train": None, "test": test}, "map": {"train": None, "test": test}}

    baseline = [cell(0, 0.50), cell(1, 0.60), cell(2, 0.55), cell(3, 0.70)]
    row = [cell(0, 0.53), cell(1, 0.61), cell(2, 0.60)]  # seed 3 unfinished: 3 pairs
    out = ablate.paired_summary(row, baseline)["ap50"]["test"]
    diffs = [0.03, 0.01, 0.05]  # mean 0.03, sample std 0.02; t(0.975, 2) = 4.3027
    half = 4.302653 * 0.02 / 3 ** 0.5
    assert out["n"] == 3 and out["mean"] == pytest.approx(sum(diffs) / 3)
    assert (out["low"], out["high"]) == (pytest.approx(0.03 - half, abs=1e-6), pytest.approx(0.03 + half, abs=1e-6))
    assert ablate.paired_summary(row, baseline)["ap50"]["train"] == {"mean": None, "low": None, "high": None, "n": 0}
    record = {"row": "x", "paired_gain": 0.03, "ci95_low": 0.03 - half, "ci95_high": 0.03 + half}
    assert ablate.paired_cell(record) == "+3.0 [-2.0, +8.0]"


def test_csv_numbers_equal_the_json_numbers(toy: dict) -> None:
    out, summary = toy["out"], toy["summary"]
    t4, t5 = read_csv(out / "table4.csv"), read_csv(out / "table5.csv")
    assert list(t4) == ["teacher", "baseline", "cls_w", "hints"] and list(t5) == ["teacher", "baseline"]
    assert float(t4["teacher"]["ap50_mean"]) == summary["teacher"]["ap50"]["test"]
    assert float(t5["teacher"]["train_ap50_mean"]) == summary["teacher"]["ap50"]["train"]
    for name in ("baseline", "cls_w"):
        row = summary["rows"][name]
        assert float(t4[name]["ap50_mean"]) == row["ap50"]["test"]["mean"]
        assert float(t4[name]["map_mean"]) == row["map"]["test"]["mean"]
        assert float(t4[name]["ap50_std"]) == row["ap50"]["test"]["std"] == 0.0
        assert float(t4[name]["gain_ap50"]) == row["gain_ap50"]["test"]
    assert float(t4["cls_w"]["paired_gain"]) == summary["rows"]["cls_w"]["paired"]["ap50"]["test"]["mean"]
    assert t4["cls_w"]["ci95_low"] == t4["cls_w"]["ci95_high"] == ""  # one seed: no interval
    assert float(t5["baseline"]["train_ap50_mean"]) == summary["rows"]["baseline"]["ap50"]["train"]["mean"]
    assert t4["hints"]["ap50_mean"] == "" and t4["hints"]["note"] == "n/a (channels differ: 64 vs 128)"
    cls_w = summary["cells"][1]
    assert summary["rows"]["cls_w"]["ap50"]["test"]["mean"] == cls_w["ap50"]["test"]


def test_second_run_reads_every_cell_back(toy: dict, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out, args = toy["out"], toy["args"]
    before = {name: (out / name).read_text() for name in ("table4.md", "table5.md", "table4.csv", "table5.csv")}

    def no_training(cfg: Config) -> float:
        raise AssertionError(f"{cfg.output_dir} retrained")

    monkeypatch.setattr(runner, "train_cell", no_training)
    capsys.readouterr()
    assert main(["ablate", args["config"], "--seeds", "1", "--out", args["out_dir"], "--rows", "cls_w,hints",
                 *args["overrides"]]) == 0
    printed = capsys.readouterr().out
    assert before["table4.md"].strip() in printed and before["table5.md"].strip() in printed
    assert printed.strip().endswith(f"outputs in {out}")
    assert {name: (out / name).read_text() for name in before} == before
    with pytest.raises(DetkdError, match="plan.json: .* holds an ablation of"):
        run_ablation(plan_ablation(**{**args, "overrides": [*args["overrides"], "train.lr=1e-2"]}))


def test_killed_cell_resumes_from_last_pt(toy: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    out, args = toy["out"], toy["args"]
    before = (out / "table4.csv").read_text()
    (out / "cls_w" / "seed0" / runner.CELL_FILE).unlink()  # killed after its last checkpoint
    calls, real_train = [], runner.train

    def spy(cfg, resume=False, **kwargs):
        calls.append((cfg.output_dir, resume))
        return real_train(cfg, resume=resume, **kwargs)

    monkeypatch.setattr(runner, "train", spy)  # the trainer as the runner calls it
    run_ablation(plan_ablation(**args))
    assert calls == [(str(out / "cls_w" / "seed0"), True)]  # only the killed cell, with --resume
    assert (out / "table4.csv").read_text() == before  # it ended where it was: same checkpoint, same scores


def test_cells_side_by_side_give_the_same_tables(toy: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs 2: both unfinished cells go to worker processes (each resumes its finished last.pt
    there: nothing left to train, scored again) and the tables come back identical."""
    out, args = toy["out"], toy["args"]
    before = {name: (out / name).read_text() for name in ("table4.csv", "table5.csv", "table4.md")}
    for row in ("baseline", "cls_w"):
        (out / row / "seed0" / runner.CELL_FILE).unlink()
    assert main(["ablate", args["config"], "--seeds", "1", "--out", args["out_dir"], "--rows", "cls_w,hints",
                 "--jobs", "2", *args["overrides"]]) == 0
    assert {name: (out / name).read_text() for name in before} == before
    for row in ("baseline", "cls_w"):  # each was run by a worker, which logged to the cell's folder
        assert "started in worker process" in (out / row / "seed0" / "log.txt").read_text()
    assert "outputs in" in capsys.readouterr().out
    assert main(["ablate", args["config"], "--jobs", "0"]) == 2
    assert "--jobs 0: give 1 or more" in capsys.readouterr().err


def test_given_teacher_checkpoint_is_scored_not_trained(toy: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args, out = toy["args"], tmp_path / "given"
    teacher = toy["out"] / "teacher" / "last.pt"
    assert main(["ablate", args["config"], "--seeds", "1", "--out", str(out), "--rows", "baseline",
                 *args["overrides"], f"teacher.checkpoint={teacher}"]) == 0
    assert "outputs in" in capsys.readouterr().out
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["teacher"]["trained"] is False and summary["teacher"]["checkpoint"] == str(teacher)
    assert summary["teacher"]["ap50"] == toy["summary"]["teacher"]["ap50"]
    assert not (out / "teacher" / "last.pt").exists()
