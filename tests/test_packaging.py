"""detkd as a user installs it: the wheel built from this checkout, installed into a fresh venv,
run from a folder that has no configs/ (the configs are found inside the installed package).

The venv reuses this environment's packages (torch and the rest) through a ``.pth`` file instead
of downloading them; nothing is fetched (``pip --no-index``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from detkd.cli import main
from detkd.config import load_any_config
from detkd.config.files import configs_root, description, find_config, find_packaged, list_configs
from detkd.errors import DetkdError

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "detkd", "configs")
TOY_DATA = ("device=cpu", "data.num_workers=0", "data.synth.images=12", "data.synth.profile=easy")
TOY_TRAIN = ("train.epochs=1", "train.batch_size=2", "train.warmup_iters=2", "train.eval_every=0", "train.log_every=1")
TOY_TRAIN_SECTION = {"epochs": 1, "batch_size": 2, "optimizer": "adamw", "lr": 1.0e-3, "warmup_iters": 2,
                     "log_every": 1}
TOY_MODEL = "_base_: _base.yaml\nmodel: {{preset: {preset}, min_size: {size}, max_size: {size}}}\n"
# _base_/distill_recipe.yaml is not in the folder: it is found among the installed package's configs
TOY_DISTILL = "_base_: [student_{kind}.yaml, _base_/distill_recipe.yaml]\nteacher: {{config: {teacher}}}\n"
# what the installed package resolves: the demo's default folder, a distillation config's
# teacher.config (configs/synth/teacher.yaml) and teacher.checkpoint (detkd/assets/...), loaded
CHECK_RESOLVED = """\
import sys
from detkd.config import DistillConfig, load_config
from detkd.distill.build import load_teacher
from detkd.experiments.demo import choose_teacher, config_paths
paths = config_paths("configs/synth")
assert all(p.startswith(sys.argv[1]) for p in paths.values()), paths
assert choose_teacher("configs/synth", "out").source == "bundled"
cfg = load_config("configs/synth/distill_small.yaml", list(sys.argv[2:]), schema=DistillConfig)
load_teacher(cfg, 10)
print("resolved", paths["teacher"])
"""


def test_a_config_not_found_here_is_found_by_name_among_detkds(tmp_path: Path, monkeypatch) -> None:
    root = configs_root()
    assert (root / "synth" / "teacher.yaml").is_file()
    monkeypatch.chdir(tmp_path)  # no configs/ here
    for name in ("synth/teacher.yaml", "configs/synth/teacher.yaml", "./configs/synth/teacher.yaml"):
        assert find_config(name) == str(root / "synth" / "teacher.yaml")
    assert find_config("configs/synth") == str(root / "synth")
    assert find_config("nowhere.yaml") == "nowhere.yaml"
    assert find_packaged("detkd/assets/demo_teacher.pt") == str(REPO / "detkd" / "assets" / "demo_teacher.pt")
    (tmp_path / "synth").mkdir()  # a file of the working directory wins over detkd's
    (tmp_path / "synth" / "teacher.yaml").write_text("seed: 3\n")
    assert find_config("synth/teacher.yaml") == "synth/teacher.yaml"
    assert load_any_config("synth/teacher.yaml").seed == 3
    # _base_ by name: a config written anywhere builds on detkd's recipe
    (tmp_path / "mine.yaml").write_text("_base_: [configs/synth/student_small.yaml, _base_/distill_recipe.yaml]\n"
                                        "teacher: {config: configs/bccd/teacher.yaml}\n")
    cfg = load_any_config("mine.yaml")
    assert cfg.distill.rcn_cls.mode == "add" and cfg.model.preset == "tiny" and cfg.teacher.config
    assert load_any_config(cfg.teacher.config).model.min_size == 320  # bccd's teacher, by name
    (tmp_path / "broken.yaml").write_text("_base_: _base_/nothing.yaml\n")
    with pytest.raises(DetkdError, match=r"_base_ file not found: .*nothing\.yaml \(nor among detkd's configs"):
        load_any_config("broken.yaml")


def test_detkd_configs_lists_each_with_its_first_comment_line(capsys) -> None:
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    names = [name for name, _ in list_configs()]
    assert len(names) == len(list(configs_root().rglob("*.yaml"))) and "synth/teacher.yaml" in names
    for name in names:
        assert name in out
    first = (REPO / "configs" / "synth" / "teacher.yaml").read_text().splitlines()[0].lstrip("# ")
    assert first and description(configs_root() / "synth" / "teacher.yaml") == first and first in out
    assert main(["configs", "voc"]) == 0
    listed = capsys.readouterr().out
    assert "voc/teacher_r50.yaml" in listed and "\n  synth/" not in listed
    assert main(["configs", "nothing_here"]) == 2


def test_pyproject_lists_every_package() -> None:
    """packages are listed by hand (detkd.configs is mapped from configs/): none may be forgotten."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "detkd").rglob("__init__.py")}
    assert set(setup["packages"]) == found | {"detkd.configs"}
    assert setup["package-dir"]["detkd.configs"] == "configs"


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def installed_venv(tmp_path: Path) -> Path:
    """A fresh venv holding the wheel of this checkout (built from a copy of its sources, so no
    build/ is left in the checkout), this environment's site-packages reachable through a .pth."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "wheel"), str(src)], tmp_path, env)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([str(python), "-c", purelib], tmp_path, env).strip())
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "zz_reuse_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    wheel = next((tmp_path / "wheel").glob("detkd-*.whl"))
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)], tmp_path, env)
    return venv


@pytest.mark.skipif(sys.platform == "win32", reason="the venv layout (bin/) of POSIX")
def test_a_wheel_install_runs_train_and_the_demo_from_any_folder(tmp_path: Path) -> None:
    venv = installed_venv(tmp_path)
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HOME=str(tmp_path / "home"), MPLBACKEND="Agg")
    detkd = [str(venv / "bin" / "detkd")]
    listed = run(detkd + ["configs", "synth"], work, env)
    where = listed.split("(", 1)[1].split(")", 1)[0]  # the header names the folder
    assert where.startswith(str(venv)) and where.endswith(os.path.join("detkd", "configs"))
    assert "synth/teacher.yaml" in listed and "synth/distill_small.yaml" in listed

    toy = (*TOY_DATA, f"data.synth.cache_dir={cache}")
    run(detkd + ["train", "synth/teacher.yaml", "output_dir=teacher", "model.min_size=64", "model.max_size=64",
                 "data.augment.scale_jitter=null", *toy, *TOY_TRAIN], work, env)
    assert (work / "teacher" / "last.pt").is_file()
    out = run([str(venv / "bin" / "python"), "-c", CHECK_RESOLVED, where, *toy], work, env)
    assert f"resolved {where}" in out

    folder = work / "toy"
    folder.mkdir()
    synth = {"images": 12, "seed": 0, "profile": "easy", "cache_dir": str(cache)}
    data = {"format": "synth", "num_workers": 0, "synth": synth}
    (folder / "_base.yaml").write_text(yaml.safe_dump({"device": "cpu", "data": data, "train": TOY_TRAIN_SECTION}))
    (folder / "teacher.yaml").write_text(TOY_MODEL.format(preset="small", size=64))
    (folder / "student_small.yaml").write_text(TOY_MODEL.format(preset="tiny", size=64))
    (folder / "student_lowres.yaml").write_text(TOY_MODEL.format(preset="small", size=32))
    for kind in ("small", "lowres"):
        (folder / f"distill_{kind}.yaml").write_text(TOY_DISTILL.format(kind=kind, teacher="toy/teacher.yaml"))
    printed = run(detkd + ["demo", "--data", "toy", "--out", "report", "--jobs", "1"], work, env, timeout=600)
    assert "student_lowres_kd" in printed and (work / "report" / "summary.json").is_file()
    assert not (work / "configs").exists()
