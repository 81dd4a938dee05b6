"""Config loading: typed conversion, errors that name key/file/fix, bases, overrides, round trip."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from pathlib import Path

import pytest

from detkd.config import (
    Config, DataSection, DistillConfig, ModelSection, config_from_dict, config_to_dict, is_distill_config,
    load_any_config, load_config, opt, save_config, saved_run_config,
)
from detkd.errors import DetkdError
from detkd.config.presets import resolve_model_config

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(REPO.glob("configs/**/*.yaml"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(DetkdError) as info:
        load_config(path, overrides)
    return str(info.value)


# --- typed conversion ---------------------------------------------------------------------------


def test_types_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", """
output_dir: runs/a
train: {lr: 1, weight_decay: 1e-4, epochs: 3, amp: true, clip_grad_norm: null}
data: {classes: [RBC, WBC], class_map: {Van: Car}, augment: {scale_jitter: [1, 2.5]}}
model: {rpn: {anchor_sizes: [16, 32]}}
""")
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.output_dir == "runs/a"
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # an int is accepted for a float
    assert cfg.train.weight_decay == 1e-4  # PyYAML reads 1e-4 as text; a float key takes it
    assert cfg.train.epochs == 3 and cfg.train.amp is True and cfg.train.clip_grad_norm is None
    assert cfg.data.classes == ["RBC", "WBC"] and cfg.data.class_map == {"Van": "Car"}
    assert cfg.data.augment.scale_jitter == [1.0, 2.5] and cfg.data.augment.hflip == 0.5  # default kept
    assert cfg.model.rpn.anchor_sizes == [16, 32] and cfg.model.rpn.nms_thresh == 0.7
    assert cfg.model.min_size == Config().model.min_size


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "empty.yaml", "# nothing\n")) == Config()


@pytest.mark.parametrize(
    ("text", "key", "expected", "found"),
    [
        ("train: {lr: fast}", "'train.lr'", "float", "'fast' (str)"),
        ("train: {epochs: 2.5}", "'train.epochs'", "int", "2.5 (float)"),
        ("train: {epochs: true}", "'train.epochs'", "int", "True (bool)"),
        ("train: {amp: 1}", "'train.amp'", "true or false", "1 (int)"),
        ("data: {classes: [a, 3]}", "'data.classes[1]'", "str", "3 (int)"),
        ("data: {classes: a}", "'data.classes'", "list[str] or null", "'a' (str)"),
        ("data: {root: 12}", "'data.root'", "str", "12 (int) (quote it"),
        ("model: 3", "'model'", "a mapping (section)", "3 (int)"),
        ("model: {rpn: {anchor_sizes: null}}", "'model.rpn.anchor_sizes'", "list[int]", "null"),
    ],
)
def test_wrong_type_names_key_file_type_and_value(tmp_path: Path, text: str, key: str, expected: str, found: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    message = error_of(path)
    assert message.startswith(f"{path}: {key} must be {expected}, got {found}"), message


def test_value_outside_choices_lists_the_valid_ones(tmp_path: Path) -> None:
    message = error_of(write(tmp_path / "c.yaml", "data: {format: vocc}"))
    assert "'data.format' must be one of voc, kitti, coco, synth" in message and "did you mean 'voc'" in message
    for key, value in (("model.norm", "batchnorm"), ("model.backbone", "resnet51"), ("train.optimizer", "adam"),
                       ("train.schedule", "poly"), ("device", "gpu")):
        assert f"command line: '{key}' must be" in error_of(tmp_path / "c.yaml", (f"{key}={value}", "data.format=voc"))


# --- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "closest"),
    [
        ("model: {backbon: resnet18}", "model.backbon", "model.backbone"),
        ("model: {rpn: {nms_tresh: 0.6}}", "model.rpn.nms_tresh", "model.rpn.nms_thresh"),
        ("train: {min_size: 600}", "train.min_size", "model.min_size"),  # right key, wrong section
        ("outputdir: runs/x", "outputdir", "output_dir"),
    ],
)
def test_unknown_key_names_key_file_and_closest(tmp_path: Path, text: str, key: str, closest: str) -> None:
    path = write(tmp_path / "typo.yaml", text)
    assert error_of(path) == f"{path}: unknown key {key!r}; did you mean {closest!r}?"


def test_unknown_key_far_from_everything_lists_the_section(tmp_path: Path) -> None:
    message = error_of(write(tmp_path / "x.yaml", "train: {zzz: 1}"))
    assert "unknown key 'train.zzz'" in message and "valid keys in 'train': epochs, batch_size" in message


def test_unknown_key_in_a_base_names_the_base(tmp_path: Path) -> None:
    base = write(tmp_path / "sub" / "base.yaml", "train: {epochs: 2, lrr: 0.1}")
    top = write(tmp_path / "top.yaml", "_base_: sub/base.yaml\ntrain: {epochs: 3}")
    assert error_of(top).startswith(f"{base}: unknown key 'train.lrr'; did you mean 'train.lr'?")


# --- files --------------------------------------------------------------------------------------


NOT_PACKAGED = " (nor among detkd's configs: `detkd configs` lists them)"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"config file not found: {missing}{NOT_PACKAGED}"
    top = write(tmp_path / "top.yaml", "_base_: gone.yaml")
    assert error_of(top) == f"{top}: _base_ file not found: {tmp_path / 'gone.yaml'}{NOT_PACKAGED}"


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "train:\n  lr: 0.1\n   epochs: 3\n")
    assert error_of(path).startswith(f"{path}:3: invalid YAML:")
    path = write(tmp_path / "list.yaml", "- a\n- b\n")
    assert "a config must be a mapping" in error_of(path)


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "twice.yaml", "train:\n  epochs: 3\nmodel:\n  min_size: 100\ntrain:\n  lr: 0.1\n")
    assert error_of(path) == (f"{path}:5: duplicate key 'train' (first at line 1); the second would silently replace "
                              "the first")
    nested = write(tmp_path / "nested.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n")
    assert error_of(nested).startswith(f"{nested}:3: duplicate key 'lr' (first at line 2)")


@pytest.mark.parametrize(("override", "message"), [
    ("train.epochs=0", "'train.epochs': must be >= 1; got 0"),
    ("train.clip_grad_norm=-1", "'train.clip_grad_norm': must be > 0; got -1.0"),
    ("train.gamma=-0.5", "'train.gamma': must be > 0"),
    ("train.weight_decay=-1e-4", "'train.weight_decay': must be >= 0"),
    ("train.checkpoint_every=-1", "'train.checkpoint_every': must be >= 0"),
    ("model.roi.detections_per_img=0", "'model.roi.detections_per_img': must be >= 1"),
    ("model.min_size=0", "'model.min_size': must be >= 1"),
    ("model.fpn_channels=0", "'model.fpn_channels': must be >= 1"),
    ("data.num_workers=-1", "'data.num_workers': must be >= 0"),
    ("model.rpn.aspect_ratios=[0.5,0]", "'model.rpn.aspect_ratios': each element must be > 0; got [0.5, 0.0]"),
    ("data.augment.hflip=1.5", "'data.augment.hflip': must be 0 to 1; got 1.5"),
    ("model.rpn.fg_iou_thresh=0.2", "'model.rpn.fg_iou_thresh' (0.2) must be at least bg_iou_thresh (0.3)"),
    ("model.roi.bg_iou_thresh=0.6", "'model.roi.fg_iou_thresh' (0.5) must be at least bg_iou_thresh (0.6)"),
    ("model.min_size=400", "'model.min_size' (400) must be at most max_size (320): the resize holds"),
])
def test_values_out_of_range_are_refused_once_in_the_schema(override: str, message: str) -> None:
    assert error_of(REPO / "configs" / "synth" / "student_small.yaml", (override,)).startswith(f"command line: {message}")


def test_min_size_above_max_size_is_refused_after_the_preset_fills_in(tmp_path: Path) -> None:
    """A preset's sizes count where the file leaves them at their defaults (tiny: 320/533)."""
    path = write(tmp_path / "sizes.yaml", "model: {preset: tiny, max_size: 300}")
    assert error_of(path) == (f"{path}: 'model.min_size' (320) must be at most max_size (300): the resize holds an "
                              "image's longer side at max_size, so its shorter side never reaches min_size")
    assert load_config(write(tmp_path / "fine.yaml", "model: {preset: tiny, min_size: 256, max_size: 300}")).model.max_size == 300
    assert error_of(write(tmp_path / "plain.yaml", "model: {max_size: 700}")).endswith("'model.min_size' (800) must be "
                                                                                    "at most max_size (700): the resize "
                                                                                    "holds an image's longer side at "
                                                                                    "max_size, so its shorter side never "
                                                                                    "reaches min_size")


def test_a_distillation_config_where_a_training_config_belongs_says_so() -> None:
    message = error_of(REPO / "configs" / "synth" / "distill_small.yaml")
    assert re.search(r"unknown key '(teacher|student|distill)': this is a distillation config", message), message
    assert "`detkd distill` runs it" in message


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if p.parent.name != "_base_"],  # not fragments
                         ids=lambda p: str(p.relative_to(REPO)))
def test_a_file_and_its_runs_checkpoint_are_read_with_the_same_schema(path: Path) -> None:
    cfg = load_any_config(path)
    assert isinstance(cfg, DistillConfig) == is_distill_config(path) == ("distill" in path.name)
    saved = saved_run_config(config_to_dict(cfg), "last.pt")  # what a checkpoint of its run holds
    assert type(saved) is type(cfg) and saved == cfg


def test_every_range_is_documented() -> None:
    from detkd.config import Range, TrainSection

    text = (REPO / "docs" / "CONFIG.md").read_text()
    assert "| `train.epochs` | int | `12` | training epochs (range: >= 1) |" in text
    assert "(range: 0 to 1)" in text and "(range: > 0 and <= 1)" in text
    assert Range(0, 1, lo_open=True).text() == "> 0 and <= 1" and 0.0 not in Range(0, lo_open=True)
    assert dataclasses.fields(TrainSection)[0].metadata["bounds"].text() == ">= 1"


# --- bases --------------------------------------------------------------------------------------


def test_bases_merge_in_order_then_the_file(tmp_path: Path) -> None:
    write(tmp_path / "b1.yaml", "train: {epochs: 1, lr: 0.1, milestones: [1, 2, 3]}\nmodel: {rpn: {nms_thresh: 0.6}}")
    write(tmp_path / "b2.yaml", "train: {epochs: 2, milestones: [5]}\nmodel: {rpn: {fg_iou_thresh: 0.8}}")
    write(tmp_path / "deep" / "b3.yaml", "_base_: ../b1.yaml\nseed: 7")
    top = write(tmp_path / "top.yaml", "_base_: [deep/b3.yaml, b2.yaml]\ntrain: {batch_size: 8}")
    cfg = load_config(top)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size, cfg.seed) == (2, 0.1, 8, 7)
    assert cfg.train.milestones == [5]  # lists are replaced, not merged
    assert (cfg.model.rpn.nms_thresh, cfg.model.rpn.fg_iou_thresh) == (0.6, 0.8)  # mappings merged


def test_absolute_base_and_diamond(tmp_path: Path) -> None:
    common = write(tmp_path / "common.yaml", "seed: 3")
    write(tmp_path / "l.yaml", f"_base_: {common}\ntrain: {{epochs: 4}}")
    write(tmp_path / "r.yaml", "_base_: common.yaml\ntrain: {lr: 0.5}")
    cfg = load_config(write(tmp_path / "top.yaml", "_base_: [l.yaml, r.yaml]"))
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr) == (3, 4, 0.5)


def test_base_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_base_: b.yaml")
    write(tmp_path / "b.yaml", "_base_: [c.yaml]")
    write(tmp_path / "c.yaml", "_base_: a.yaml")
    message = error_of(tmp_path / "a.yaml")
    assert "_base_ cycle" in message and "a.yaml -> " in message and "c.yaml -> " in message
    assert "'_base_' must be a file name" in error_of(write(tmp_path / "n.yaml", "_base_: 3"))


# --- overrides ----------------------------------------------------------------------------------


def test_overrides_are_typed_nested_and_win(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "train: {lr: 0.1}\nmodel: {weights: X.Y, rpn: {nms_thresh: 0.6}}")
    cfg = load_config(path, [
        "train.lr=0.01", "train.epochs=2", "data.classes=[a,b]", "model.weights=null",
        "data.class_map.Van=Car", "model.rpn={fg_iou_thresh: 0.8}", "output_dir=2024", "data.limit=8",
        "train.amp=true", "train.weight_decay=5e-4",
    ])
    assert (cfg.train.lr, cfg.train.epochs, cfg.data.classes, cfg.model.weights) == (0.01, 2, ["a", "b"], None)
    assert cfg.data.class_map == {"Van": "Car"} and cfg.output_dir == "2024" and cfg.data.limit == 8
    assert (cfg.model.rpn.nms_thresh, cfg.model.rpn.fg_iou_thresh) == (0.6, 0.8)  # merged into the section
    assert cfg.train.amp is True and cfg.train.weight_decay == 5e-4


def test_bad_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "")
    assert error_of(path, ("train.lrr=0.1",)) == "command line: unknown key 'train.lrr'; did you mean 'train.lr'?"
    assert error_of(path, ("lr=0.1",)) == "command line: unknown key 'lr'; did you mean 'train.lr'?"
    assert "is not KEY=VALUE" in error_of(path, ("train.lr",))
    assert "is a value, not a section" in error_of(path, ("train.lr.x=1",))
    assert error_of(path, ("train.epochs=two",)).startswith("command line: 'train.epochs' must be int, got 'two'")
    assert "unknown key 'model.rpn.nms'" in error_of(path, ("model.rpn={nms: 1}",))


# --- saving -------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "a.yaml", "data: {classes: ['yes', 'null', '1'], class_map: {Van: Car}}"),
                      ["train.weight_decay=1e-10", "train.clip_grad_norm=10", "model.weights=A.B", "output_dir=runs/a b"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert config_to_dict(load_config(out)) == config_to_dict(cfg) == dataclasses.asdict(cfg)
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temporary file left
    default = Config(data=DataSection(format="synth"))
    save_config(default, out)  # replaces the file
    assert load_config(out) == default


@dataclasses.dataclass
class GrownConfig(Config):
    """Config as a later issue grows it: a new optional section is only a new field."""

    teacher: ModelSection | None = opt(None, "the teacher model")
    weights: dict[str, float] = opt({}, "loss weights by name")


def test_a_new_section_is_only_a_new_field(tmp_path: Path) -> None:
    path = write(tmp_path / "kd.yaml", "teacher: {backbone: resnet18, rpn: {nms_thresh: 0.6}}\nweights: {hint: 1}")
    cfg = load_config(path, ["teacher.min_size=400", "weights.rcn=0.5"], schema=GrownConfig)
    rpn = dataclasses.replace(ModelSection().rpn, nms_thresh=0.6)
    assert cfg.teacher == ModelSection(backbone="resnet18", min_size=400, rpn=rpn)
    assert cfg.weights == {"hint": 1.0, "rcn": 0.5} and cfg.model == ModelSection()
    empty = write(tmp_path / "empty.yaml", "")
    assert load_config(empty, ["teacher.norm=gn"], GrownConfig).teacher == ModelSection(norm="gn")  # null -> section
    out = tmp_path / "config.yaml"
    save_config(cfg, out)
    assert load_config(out, (), GrownConfig) == cfg
    typo = write(tmp_path / "t.yaml", "teacher: {min_sise: 3}")
    assert error_of(typo).startswith(f"{typo}: unknown key 'teacher'")  # plain Config has no teacher
    with pytest.raises(DetkdError, match="unknown key 'teacher.min_sise'; did you mean 'teacher.min_size'"):
        load_config(typo, (), GrownConfig)
    with pytest.raises(DetkdError, match="'teacher.backbone' must be one of"):
        load_config(path, ["teacher.backbone=vgg16"], GrownConfig)
    with pytest.raises(DetkdError, match="'device' must be auto, cpu, cuda or cuda:N"):
        load_config(path, ["device=gpu"], GrownConfig)


def test_config_from_dict_checks_like_a_file() -> None:
    cfg = load_config(REPO / "configs" / "synth" / "teacher.yaml", ["train.lr=0.005"])
    assert config_from_dict(config_to_dict(cfg), "run/last.pt") == cfg
    assert config_from_dict({}, "x") == Config()
    with pytest.raises(DetkdError, match=r"^run/last.pt: unknown key 'train.lrr'; did you mean 'train.lr'\?$"):
        config_from_dict({"train": {"lrr": 1}}, "run/last.pt")
    with pytest.raises(DetkdError, match=r"^run/last.pt: 'seed' must be int, got 'x' \(str\)$"):
        config_from_dict({"seed": "x"}, "run/last.pt")


# --- the shipped configs and their reference ------------------------------------------------------


def test_configs_are_there() -> None:
    names = {str(p.relative_to(REPO / "configs")) for p in CONFIG_FILES}
    for dataset in ("synth", "bccd"):
        assert {f"{dataset}/{n}.yaml" for n in ("teacher", "student_small", "student_lowres")} <= names
    for dataset in ("voc", "kitti", "coco"):
        assert {f"{dataset}/{n}.yaml" for n in ("teacher_r50", "student_r18", "student_mnv3", "student_r50_half")} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_loads(path: Path) -> None:
    distill = path.name.startswith("distill")  # distillation configs and their shared base
    cfg = load_config(path, schema=DistillConfig if distill else Config)
    assert isinstance(cfg, DistillConfig if distill else Config)
    if path.parent.name == "bccd" and not path.name.startswith("_"):
        assert cfg.data.root == "../shared/data/bccd/BCCD" and cfg.data.classes == ["RBC", "WBC", "Platelets"]


COUNTS = ("pre_nms_top_n_train", "post_nms_top_n_train", "pre_nms_top_n_test", "post_nms_top_n_test")


def test_low_resolution_students_are_the_teacher_at_half_size() -> None:
    pairs = {"synth": ("teacher", "student_lowres"), "bccd": ("teacher", "student_lowres")}
    pairs |= {d: ("teacher_r50", "student_r50_half") for d in ("voc", "kitti", "coco")}
    for dataset, names in pairs.items():
        t, s = (resolve_model_config(load_config(REPO / "configs" / dataset / f"{n}.yaml").model) for n in names)
        t_counts, s_counts = ({k: getattr(m.rpn, k) for k in COUNTS} for m in (t, s))
        if names[1] == "student_r50_half" or dataset == "synth":  # the counts scale with the image area (issue 5)
            assert s_counts == {k: v // 4 for k, v in t_counts.items()}, dataset
        else:
            assert s_counts == t_counts, dataset
        t.rpn = dataclasses.replace(t.rpn, **s_counts)
        assert (s.preset, s.backbone, s.rpn, s.roi) == (t.preset, t.backbone, t.rpn, t.roi), dataset
        assert 2 * s.min_size == t.min_size and abs(2 * s.max_size - t.max_size) <= 1, dataset


def test_config_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "tools" / "config_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert module.render(current) == current, "docs/CONFIG.md is out of date: run python tools/config_reference.py"
    for key in ("`train.lr`", "`data.limit`", "`model.rpn.nms_thresh`", "`output_dir`"):
        assert key in current


def test_paths_stay_as_written(tmp_path: Path) -> None:
    sub = write(tmp_path / "sub" / "a.yaml", "data: {root: rel/data}\nmodel: {checkpoint: ck.pt}")
    cfg = load_config(os.path.relpath(sub))
    assert (cfg.data.root, cfg.model.checkpoint) == ("rel/data", "ck.pt")  # relative to the working directory


def test_bench_configs_load_and_differ_from_their_base_as_they_say() -> None:
    before = load_config(REPO / "bench" / "configs" / "student_r50_half_torchvision_counts.yaml").model
    after = load_config(REPO / "configs" / "voc" / "student_r50_half.yaml").model
    assert (before.rpn.pre_nms_top_n_test, before.rpn.post_nms_top_n_test) == (1000, 1000)
    assert (after.rpn.pre_nms_top_n_test, after.rpn.post_nms_top_n_test) == (250, 250)
    assert (before.min_size, before.max_size, before.backbone) == (after.min_size, after.max_size, after.backbone)
