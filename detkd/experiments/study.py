"""``detkd init``: the five configs of a distillation study on a user's dataset, from its data.

:func:`inspect_data` reads the dataset as ``detkd data stats`` does (:mod:`detkd.data.stats`):
splits, classes, image sizes and box sizes. :func:`plan_study` picks from them

- the input size: the images' median shorter side, at most 800 px (``gpu`` models) or 320 px
  (``cpu`` presets), a multiple of 32; the longer-side limit from the widest image, so that no
  image is shrunk by it;
- the anchor sizes: five, doubling from FPN level to level (strides 4 to 64, as detkd's models
  have them), placed so that the geometric middle of their range [a, 16a] is the middle of the
  5th-95th percentile of the box sizes at that input size; the half-resolution student keeps
  them (its level l then has the anchors of the teacher's level l+1, in the teacher's pixels);
- the schedule from the number of training images.

:func:`study_files` writes ``teacher.yaml`` (ResNet-50-FPN, or the ``small`` preset),
``student_small.yaml`` (ResNet-18-FPN, or the ``tiny`` preset, at the teacher's size),
``student_lowres.yaml`` (the teacher's architecture at half its size, proposals scaled with the
area), ``distill_small.yaml`` and ``distill_lowres.yaml`` (detkd's recipe,
``_base_/distill_recipe.yaml`` by name from the installed package; the half-resolution one from
the teacher's weights with PKD hints), ``_base.yaml`` (data and schedule) and ``README.md`` (the
commands, in order). ``detkd demo --data OUT`` runs the five.
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detkd.config import dump_yaml
from detkd.data.build import load_index
from detkd.data.common import DataWarning
from detkd.errors import DetkdError
from detkd.utils.io import atomic_write

log = logging.getLogger("detkd")

MODEL_KINDS = ("gpu", "cpu")
KITTI_BENCHMARK = ("Car", "Pedestrian", "Cyclist")
MAX_SIZE = {"gpu": 800, "cpu": 320}
TEACHER_EPOCHS_FACTOR = {"gpu": 1, "cpu": 8}  # the CPU teacher trains from scratch, 8x longer (configs/bccd)
LEVELS = 5  # FPN levels P2-P6 of detkd's ResNet and preset models
VAL_EVERY = 5  # KITTI without ImageSets: every 5th image (sorted) to the evaluation split
FILES = ("_base.yaml", "teacher.yaml", "student_small.yaml", "student_lowres.yaml", "distill_small.yaml",
         "distill_lowres.yaml", "README.md")


@dataclass(frozen=True)
class DataSummary:
    """What the study is planned from: the splits and classes, the training images' median size
    and widest aspect ratio, and its box sizes (``sqrt(w h)``) over the image's shorter side."""

    fmt: str
    root: str
    train_split: str
    test_split: str
    classes: tuple[str, ...]
    train_images: int
    test_images: int
    median_size: tuple[float, float]  # width, height
    max_aspect: float  # longer side / shorter side, the widest image
    box_fractions: np.ndarray
    split_lists: dict[str, list[str]] = field(default_factory=dict)  # KITTI lists to write: name -> stems
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyPlan:
    """The choices of the study (see the module docstring)."""

    models: str
    min_size: int
    max_size: int
    anchor_sizes: list[int]
    epochs: int
    teacher_epochs: int
    limit: int | None


def voc_splits(root: str) -> tuple[str, str]:
    """train/test, trainval/test or train/val, whichever ImageSets/Main has first."""
    have = {n[:-4] for n in os.listdir(os.path.join(root, "ImageSets", "Main"))} \
        if os.path.isdir(os.path.join(root, "ImageSets", "Main")) else set()
    for train, test in (("train", "test"), ("trainval", "test"), ("train", "val")):
        if {train, test} <= have:
            return train, test
    raise DetkdError(f"{root}: no ImageSets/Main/{{train,test}}.txt (or trainval/test, train/val): make the split "
                     "files, or give --train-split and --test-split")


def coco_splits(root: str) -> tuple[str, str, tuple[str, ...]]:
    """The instances files' split names: the one with ``train`` and the one with ``val``/``test``."""
    folder = os.path.join(root, "annotations")
    names = sorted(n[len("instances_"):-5] for n in os.listdir(folder) if n.startswith("instances_")
                   and n.endswith(".json")) if os.path.isdir(folder) else []
    if not names:
        raise DetkdError(f"{root}: no annotations/instances_*.json")
    train = next((n for n in names if "train" in n), None)
    test = next((n for n in names if "val" in n or "test" in n), names[-1])
    if train is None:
        note = f"only annotations/instances_{test}.json: training and evaluation on the same images (a smoke test)"
        return test, test, (note,)
    return train, test, ()


def kitti_splits(root: str, stems: Sequence[str]) -> tuple[str, str, dict[str, list[str]], tuple[str, ...]]:
    """ImageSets/train.txt and val.txt when there, else every 5th image to ``val`` (lists to write)."""
    if all(os.path.isfile(os.path.join(root, "ImageSets", f"{n}.txt")) for n in ("train", "val")):
        return "train", "val", {}, ()
    ordered = sorted(stems)
    lists = {"val": ordered[VAL_EVERY - 1::VAL_EVERY]}
    lists["train"] = [s for s in ordered if s not in set(lists["val"])]
    note = (f"no ImageSets/train.txt and val.txt: every {VAL_EVERY}th image (sorted) held out for evaluation "
            f"({len(lists['train'])} train, {len(lists['val'])} val), lists in splits/")
    return "train", "val", lists, (note,)


def read_index(fmt: str, root: str, split: str | None = None, classes: Sequence[str] | None = None):
    """:func:`detkd.data.build.load_index`, the reader's warnings logged as ``detkd data stats`` does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        index = load_index(fmt, root, split=split, classes=classes)
    for line in index.report.summary_lines(root):
        log.warning("warning: %s", line)
    return index


def inspect_data(fmt: str, root: str, out_dir: str, classes: Sequence[str] | None = None,
                 splits: tuple[str, str] | None = None) -> DataSummary:
    """The dataset's splits, classes, image and box sizes (the training split's); ``out_dir``
    is where KITTI split lists go when the data has none."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DetkdError(f"{root}: no such folder (DATA_ROOT)")
    lists, notes = {}, ()
    if splits:
        train, test = splits
    elif fmt == "voc":
        train, test = voc_splits(root)
    elif fmt == "coco":
        train, test, notes = coco_splits(root)
    else:
        stems = [str(r.image_id) for r in read_index("kitti", root).records]
        train, test, lists, notes = kitti_splits(root, stems)
    if lists:  # read with the lists where they will be written
        train, test = (os.path.join(os.path.abspath(out_dir), "splits", f"{n}.txt") for n in (train, test))
        index = read_index("kitti", root, classes=classes)
        index.records = [r for r in index.records if str(r.image_id) in set(lists["train"])]
        test_images = len(lists["val"])
    else:
        index = read_index(fmt, root, train, classes)
        test_images = len(read_index(fmt, root, test, classes).records)
    chosen = tuple(classes) if classes else default_classes(fmt, index.classes)
    return summarise(index, fmt, root, (train, test), chosen, test_images, lists, notes)


def default_classes(fmt: str, found: Sequence[str]) -> tuple[str, ...]:
    """Every class found, sorted; for KITTI the benchmark's Car, Pedestrian, Cyclist when present."""
    benchmark = tuple(c for c in KITTI_BENCHMARK if c in found) if fmt == "kitti" else ()
    return benchmark or tuple(found)


def summarise(index, fmt: str, root: str, splits: tuple[str, str], classes: tuple[str, ...], test_images: int,
              lists: dict[str, list[str]], notes: tuple[str, ...]) -> DataSummary:
    """A :class:`DataSummary` of the training index, boxes of ``classes`` only."""
    records = index.records
    if not records:
        raise DetkdError(f"{root}: no image in the training split {splits[0]!r}")
    keep = [k for k, name in enumerate(index.classes, start=1) if name in classes]
    fractions = [math.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0)) / min(r.width, r.height)
                 for r in records for b, label in zip(r.boxes, r.labels) if label in keep]
    if not fractions:
        raise DetkdError(f"{root}: no box of {', '.join(classes)} in the training split {splits[0]!r}")
    widths, heights = np.array([r.width for r in records]), np.array([r.height for r in records])
    aspect = float(np.max(np.maximum(widths, heights) / np.minimum(widths, heights)))
    return DataSummary(fmt, root, splits[0], splits[1], classes, len(records), test_images,
                       (float(np.median(widths)), float(np.median(heights))), aspect,
                       np.asarray(fractions, dtype=np.float64), lists, notes)


def plan_study(data: DataSummary, models: str = "gpu", size: int | None = None, epochs: int | None = None,
               limit: int | None = None, teacher_epochs: int | None = None) -> StudyPlan:
    """Input size, anchors and schedule for ``data`` (see the module docstring); ``size``,
    ``epochs`` (the students') and ``teacher_epochs`` replace the chosen ones."""
    if models not in MODEL_KINDS:
        raise DetkdError(f"--models {models}: expected one of {', '.join(MODEL_KINDS)}")
    min_size = size or max(32, min(MAX_SIZE[models], int(min(data.median_size))) // 32 * 32)
    max_size = max(min_size, math.ceil(min_size * data.max_aspect / 32) * 32)
    anchors = anchor_sizes(data.box_fractions * min_size)
    images = min(data.train_images, limit) if limit else data.train_images
    iterations, batch, lo, hi = (6000, 8, 12, 200) if models == "gpu" else (300, 4, 2, 50)
    students = epochs or min(hi, max(lo, math.ceil(iterations * batch / images)))
    teacher = teacher_epochs or TEACHER_EPOCHS_FACTOR[models] * students
    return StudyPlan(models, min_size, max_size, anchors, students, teacher, limit)


def anchor_sizes(sizes: np.ndarray) -> list[int]:
    """Five anchor sizes doubling per level whose range [a, 16a] is centred (geometrically) on
    the 5th-95th percentile range of ``sizes`` (box sizes in input pixels)."""
    lo, hi = np.percentile(sizes, [5, 95])
    base = max(2, round(math.sqrt(max(lo, 1.0) * max(hi, 1.0)) / 2 ** ((LEVELS - 1) / 2)))
    return [int(base * 2**level) for level in range(LEVELS)]


def base_config(data: DataSummary, plan: StudyPlan) -> dict:
    """``_base.yaml``: the data, the anchors and the students' schedule."""
    section = {"format": data.fmt, "root": data.root, "train_split": data.train_split, "test_split": data.test_split,
               "classes": list(data.classes), "num_workers": 2, "augment": {"hflip": 0.5}}
    if plan.limit:
        section["limit"] = plan.limit
    e = plan.epochs
    if plan.models == "cpu":  # from scratch on CPU, as configs/bccd
        train = {"epochs": e, "batch_size": 4, "optimizer": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4,
                 "schedule": "cosine", "warmup_iters": 50, "warmup_factor": 0.01, "clip_grad_norm": 10.0,
                 "eval_every": e, "metric": "voc.mAP", "log_every": 10}
        return {"seed": 0, "device": "auto", "data": section, "model": {"rpn": {"anchor_sizes": plan.anchor_sizes}},
                "train": train}
    milestones = sorted({max(1, round(e * 2 / 3)), max(1, round(e * 11 / 12))})
    train = {"epochs": e, "batch_size": 8, "lr": 0.01, "milestones": milestones, "eval_every": max(1, e // 4),
             "metric": "voc.mAP"}
    return {"_base_": "_base_/schedule_1x.yaml", "data": section,
            "model": {"rpn": {"anchor_sizes": plan.anchor_sizes}}, "train": train}


def model_configs(plan: StudyPlan, name: str) -> dict[str, dict]:
    """teacher.yaml, student_small.yaml and student_lowres.yaml."""
    full = {"min_size": plan.min_size, "max_size": plan.max_size}
    half = {"min_size": plan.min_size // 2, "max_size": math.ceil(plan.max_size / 2)}
    te = plan.teacher_epochs
    if plan.models == "cpu":
        quarter = {"pre_nms_top_n_train": 250, "post_nms_top_n_train": 75, "pre_nms_top_n_test": 125,
                   "post_nms_top_n_test": 25}  # the small preset's counts scaled with the image area
        teacher = {"_base_": "_base.yaml", "data": {"augment": {"hflip": 0.5, "scale_jitter": [0.8, 1.25]}},
                   "model": {"preset": "small", **full}, "train": {"epochs": te, "eval_every": te}}
        small = {"_base_": "_base.yaml", "model": {"preset": "tiny", **full}}
        lowres = {"_base_": "_base.yaml", "model": {"preset": "small", **half, "rpn": quarter}}
    else:
        teacher = {"_base_": ["_base.yaml", "_base_/r50_fpn.yaml"], "model": full, "train": {"epochs": te}}
        small = {"_base_": ["_base.yaml", "_base_/r18_fpn.yaml"], "model": full}
        lowres = {"_base_": ["_base.yaml", "_base_/r50_fpn.yaml", "_base_/half_res_proposals.yaml"], "model": half}
    out = {"teacher": teacher, "student_small": small, "student_lowres": lowres}
    return {k: {"_base_": v.pop("_base_"), "output_dir": f"runs/{name}/{k}", **v} for k, v in out.items()}


def distill_configs(out_dir: str, name: str) -> dict[str, dict]:
    """distill_small.yaml and distill_lowres.yaml: detkd's recipe, from the teacher of the study."""
    teacher = {"config": os.path.join(os.path.abspath(out_dir), "teacher.yaml"),
               "checkpoint": f"runs/{name}/teacher/last.pt"}
    small = {"_base_": ["student_small.yaml", "_base_/distill_recipe.yaml"], "output_dir": f"runs/{name}/distill_small",
             "teacher": teacher}
    lowres = {"_base_": ["student_lowres.yaml", "_base_/distill_recipe.yaml"],
              "output_dir": f"runs/{name}/distill_lowres", "student": {"init": "teacher"}, "teacher": teacher,
              "distill": {"hint": {"enabled": True, "loss": "pkd", "gamma": 1.0, "level_weighting": "equal"}}}
    return {"distill_small": small, "distill_lowres": lowres}


HEADERS = {
    "_base": "Shared by the study's configs: {data}; {sched}.",
    "teacher": "The teacher: {teacher} at {size} px (shorter side), {te} epochs.",
    "student_small": "The smaller-architecture student: {small} at the teacher's {size} px (alone: its baseline).",
    "student_lowres": "The half-resolution student: the teacher's architecture at {half} px, proposals scaled with "
                      "the area; its baseline starts from the teacher's weights (model.checkpoint={ckpt}).",
    "distill_small": "Distil student_small.yaml from the teacher with detkd's recipe (additive soft CE at weight 2, "
                     "the teacher-bounded L2; configs/_base_/distill_recipe.yaml of the installed detkd). The "
                     "paper's settings: _base_/distill.yaml instead.",
    "distill_lowres": "Distil student_lowres.yaml from the teacher's weights (student.init: teacher) with detkd's "
                      "recipe and PKD hints. The paper's settings: _base_/distill.yaml instead, without the distill: lines.",
}


def header(text: str, command: str | None) -> str:
    """A config's comment header: the description (its first line is what ``detkd configs``
    shows) and the command that runs it."""
    lines = [f"# {line}" for line in textwrap.wrap(text, 97, break_on_hyphens=False)]
    return "\n".join(lines + ([f"#   {command}"] if command else [])) + "\n"


def study_files(data: DataSummary, plan: StudyPlan, out_dir: str) -> dict[str, str]:
    """File name -> content of the study written to ``out_dir`` (split lists not included)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(out_dir)))
    folder = os.path.abspath(out_dir)
    configs = {"_base": base_config(data, plan), **model_configs(plan, name), **distill_configs(out_dir, name)}
    gpu = plan.models == "gpu"
    words = {"data": f"{data.fmt} data in {data.root} ({data.train_split} / {data.test_split}), classes "
                     f"{', '.join(data.classes)}" + (f", the first {plan.limit} training images" if plan.limit else ""),
             "sched": f"the students {plan.epochs} epochs " + ("(SGD, mixed precision on CUDA)" if gpu else
                                                                 "(AdamW, cosine, from scratch)"),
             "teacher": "ResNet-50-FPN (ImageNet backbone)" if gpu else "the small preset (ResNet-18-FPN, GroupNorm)",
             "small": "ResNet-18-FPN (ImageNet backbone)" if gpu else "the tiny preset (MobileNetV3-FPN, GroupNorm)",
             "size": plan.min_size, "half": plan.min_size // 2, "te": plan.teacher_epochs,
             "ckpt": f"runs/{name}/teacher/last.pt"}
    files = {}
    for key, cfg in configs.items():
        verb = "distill" if key.startswith("distill") else "train"
        command = None if key == "_base" else f"detkd {verb} {os.path.join(folder, key + '.yaml')}"
        files[f"{key}.yaml"] = header(HEADERS[key].format(**words), command) + dump_yaml(cfg)
    files["README.md"] = study_readme(data, plan, folder, name)
    return files


README = """\
# Distillation study: {name}

Written by `detkd init` from the {fmt} data in `{root}`:

- {train_images} training images (`{train_split}`), {test_images} for evaluation (`{test_split}`);
- classes {classes};
- images about {width:.0f}x{height:.0f} (median): input {size} px (shorter side; longer side at most {max_size} px);
- boxes of {lo:.0f}-{hi:.0f} px at that input (5th-95th percentile): anchors {anchors};
- {models} models; the students {epochs} epochs, the teacher {teacher_epochs}.{notes}

Run the commands from the folder where `runs/` should go (the data and config paths here are
absolute; the run folders `runs/{name}/...` are relative to the working directory).

1. Check the data, as detkd reads it:
   `detkd data stats --format {fmt} --root {root}{split_arg}`
2. Train the teacher:
   `detkd train {folder}/teacher.yaml`
3. Before distilling, ask the doctor whether this teacher can teach this student:
   `detkd doctor {folder}/distill_small.yaml`
4. Train each student alone (its baseline) and distilled:
   `detkd train {folder}/student_small.yaml`
   `detkd distill {folder}/distill_small.yaml`
   `detkd train {folder}/student_lowres.yaml model.checkpoint=runs/{name}/teacher/last.pt`
   `detkd distill {folder}/distill_lowres.yaml`
5. Is the gain more than seed noise? Paired seeds, baseline against distilled:
   `detkd ablate {folder}/distill_small.yaml --seeds 3 --rows recipe`
6. Speed and size of teacher and students:
   `detkd bench {folder}/distill_small.yaml {folder}/distill_lowres.yaml --checkpoint runs/{name}/distill_small/last.pt runs/{name}/distill_lowres/last.pt`
7. Export a student as a plain torchvision state dict (and ONNX, with `pip install 'detkd[export]'`):
   `detkd export runs/{name}/distill_small/last.pt {name}_student.pt --onnx {name}_student.onnx`

Steps 2-6 in one command, with a report (`report.md`, figures) in `runs/demo-{name}`:
`detkd demo --data {folder}`
"""


def study_readme(data: DataSummary, plan: StudyPlan, folder: str, name: str) -> str:
    """README.md of the study: what was chosen from the data, and the commands in order."""
    lo, hi = np.percentile(data.box_fractions * plan.min_size, [5, 95])
    notes = "".join(f"\n- note: {n}." for n in data.notes)
    split_arg = "" if data.split_lists else f" --split {data.train_split}"
    return README.format(name=name, fmt=data.fmt, root=data.root, train_images=data.train_images,
                         test_images=data.test_images, train_split=data.train_split, test_split=data.test_split,
                         classes=", ".join(data.classes), width=data.median_size[0], height=data.median_size[1],
                         lo=lo, hi=hi, size=plan.min_size, max_size=plan.max_size, anchors=plan.anchor_sizes,
                         models=plan.models, epochs=plan.epochs, teacher_epochs=plan.teacher_epochs, notes=notes,
                         folder=folder, split_arg=split_arg)


def write_study(data: DataSummary, plan: StudyPlan, out_dir: str, force: bool = False) -> list[str]:
    """Write the study's files (and KITTI split lists) to ``out_dir``; -> the paths written. An
    existing file is an error unless ``force``."""
    files = study_files(data, plan, out_dir)
    paths = {os.path.join(out_dir, n): text for n, text in files.items()}
    paths.update({os.path.join(out_dir, "splits", f"{n}.txt"): "\n".join(stems) + "\n"
                  for n, stems in data.split_lists.items()})
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise DetkdError(f"{existing[0]}: exists ({len(existing)} of the study's files do); --force replaces them")

    for path, text in paths.items():
        with atomic_write(path) as f:
            f.write(text)
    return list(paths)
