"""The distillation task end to end: every term combination, students of both kinds, the teacher
untouched, the terms decreasing, and the bad-input errors."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import torch

from detkd.config import DistillConfig, RegTermSection, config_to_dict, load_config
from detkd.data.synth import SYNTH_CLASSES
from detkd.distill.build import build_distill_task
from detkd.distill.task import reg_term
from detkd.errors import DetkdError
from detkd.models import build_model

REPO = Path(__file__).resolve().parents[2]
TERMS = ("rcn_cls", "rpn_cls", "rcn_reg", "rpn_reg", "hint")
NUM_CLASSES = len(SYNTH_CLASSES) + 1
TEACHER_SIZE = ["model.min_size=128", "model.max_size=192"]
STUDENT_SIZE = {"small": ["model.min_size=128", "model.max_size=192"], "lowres": ["model.min_size=64", "model.max_size=96"]}


# the paper's settings (configs/_base_/distill.yaml), whatever recipe the shipped configs use
PAPER = ["distill.rcn_cls.mode=interpolate", "distill.rpn_cls.mode=interpolate", "distill.rcn_cls.weight=1.0",
         "distill.rpn_cls.weight=1.0", "distill.rcn_cls.bg_weight=1.5", "distill.rpn_cls.bg_weight=1.5",
         "distill.hint.enabled=true", "distill.hint.loss=hint_l2", "distill.hint.gamma=0.5",
         "distill.hint.level_weighting=equal", "distill.hint.adaptation=true", "student.init=none"]


def distill_config(kind: str, teacher_files: tuple[Path, Path], *overrides: str) -> DistillConfig:
    config, checkpoint = teacher_files
    return load_config(REPO / "configs" / "synth" / f"distill_{kind}.yaml",
                       [f"teacher.config={config}", f"teacher.checkpoint={checkpoint}", "data.classes=null",
                        *STUDENT_SIZE[kind], *PAPER, *overrides], schema=DistillConfig)


def batch(seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 128, 160, generator=g), torch.rand(3, 120, 128, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 150.0, 100.0]]),
                "labels": torch.tensor([1, 3]), "image_id": "a"},
               {"boxes": torch.tensor([[5.0, 5.0, 60.0, 50.0]]), "labels": torch.tensor([2]), "image_id": "b"}]
    return images, targets


def train_steps(task, steps: int, lr: float = 1e-3, batches: list | None = None) -> list[dict[str, float]]:
    """``steps`` AdamW steps on ``batches`` in turn (default: the random batches above)."""
    params = [p for p in task.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    task.module.train()
    history = []
    for i in range(steps):
        images, targets = batches[i % len(batches)] if batches else batch(i % 4)
        losses = task.step(task.module, images, targets)
        total = sum(task.loss_weights.get(k, 1.0) * v for k, v in losses.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


@pytest.mark.parametrize("kind", ["small", "lowres"])
def test_every_combination_of_terms_trains(kind: str, teacher_files: tuple[Path, Path]) -> None:
    for switches in itertools.product((False, True), repeat=len(TERMS)):
        overrides = [f"distill.{t}.enabled={str(on).lower()}" for t, on in zip(TERMS, switches)]
        torch.manual_seed(0)
        task = build_distill_task(distill_config(kind, teacher_files, *overrides), NUM_CLASSES)
        history = train_steps(task, 2)
        expected = {f"distill_{t}" for t, on in zip(TERMS, switches) if on}
        assert {k for k in history[-1] if k.startswith("distill_")} == expected, overrides
        assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values())


@pytest.mark.parametrize("overrides", [
    ["distill.rcn_cls.loss=dist"], ["distill.rcn_cls.loss=hinton", "distill.rcn_cls.temperature=4"],
    ["distill.rpn_cls.loss=hinton", "distill.rpn_cls.temperature=2"],
    ["distill.hint.loss=attention"], ["distill.hint.loss=hint_l1"], ["distill.hint.adaptation=false"],
    ["distill.rcn_reg.bounded=false", "distill.rpn_reg.bounded=false"], ["distill.hint.levels=['0','1']"],
])
def test_alternative_terms_train(overrides: list[str], teacher_files: tuple[Path, Path]) -> None:
    task = build_distill_task(distill_config("lowres", teacher_files, *overrides), NUM_CLASSES)
    history = train_steps(task, 2)
    assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values())


def test_teacher_untouched_and_gradients_reach_student_and_adapters(teacher_files: tuple[Path, Path]) -> None:
    task = build_distill_task(distill_config("lowres", teacher_files), NUM_CLASSES)
    before = copy.deepcopy(task.teacher.state_dict())
    assert not task.teacher.training and not any(p.requires_grad for p in task.teacher.parameters())
    assert all(not any(p is q for q in task.module.parameters()) for p in task.teacher.parameters())
    images, targets = batch()
    losses = task.step(task.module, images, targets)
    sum(task.loss_weights.get(k, 1.0) * v for k, v in losses.items()).backward()
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in task.module.adapters.values())
    assert task.module.student.backbone.body.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.teacher.parameters())
    after = task.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "level shift k=1" in task.pairing.describe()


def test_a_short_distillation_on_the_embedded_dataset_lowers_every_term(
    teacher_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from detkd.data.build import build_dataset
    from detkd.data.synth import ensure_synth

    data = build_dataset("voc", str(Path(ensure_synth(str(tmp_path / "synth"), 8, 0)) / "voc"), split=None,
                         classes=SYNTH_CLASSES)
    batches = [([data[i][0], data[i + 1][0]], [data[i][1], data[i + 1][1]]) for i in range(0, 8, 2)]
    torch.manual_seed(0)
    task = build_distill_task(distill_config("lowres", teacher_files), NUM_CLASSES)
    history = train_steps(task, 60, lr=2e-3, batches=batches)
    for term in (k for k in history[0] if k.startswith("distill_")):
        first = sum(h[term] for h in history[:20]) / 20
        last = sum(h[term] for h in history[-20:]) / 20
        assert last < first, f"{term}: {first:.4f} -> {last:.4f}"


def test_a_teacher_of_other_classes_is_refused(teacher_files: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = teacher_files
    state = torch.load(checkpoint, weights_only=True)
    state["classes"] = list(SYNTH_CLASSES[:-1]) + ["zebra"]
    other = tmp_path / "other.pt"
    torch.save(state, other)
    cfg = distill_config("small", (config, other))
    with pytest.raises(DetkdError, match=r"other\.pt: the teacher was trained on classes .*zebra"):
        build_distill_task(cfg, NUM_CLASSES)


def test_a_teacher_of_another_architecture_is_refused(teacher_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = teacher_files
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(f"_base_: {REPO / 'configs' / 'synth' / 'student_small.yaml'}\n")
    cfg = distill_config("small", (tiny, checkpoint))
    with pytest.raises(DetkdError, match="another architecture"):
        build_distill_task(cfg, NUM_CLASSES)


def test_detkd_distill_runs_and_its_student_exports_to_plain_torchvision(
    teacher_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detkd.cli import main
    from detkd.cli.export import checkpoint_test_set
    from detkd.data.synth import ensure_synth
    from detkd.models.export import export_student

    config, checkpoint = teacher_files
    root = ensure_synth(str(tmp_path / "synth"), 10, 0)
    run = tmp_path / "run"
    code = main(["distill", str(REPO / "configs" / "synth" / "distill_lowres.yaml"), f"output_dir={run}",
                 f"teacher.config={config}", f"teacher.checkpoint={checkpoint}", f"data.root={root}",
                 "data.synth.images=10", "data.num_workers=0", "data.limit=4", "device=cpu", "train.epochs=1",
                 "train.batch_size=2", "distill.diagnose_every=1", *STUDENT_SIZE["lowres"], *PAPER])
    assert code == 0, capsys.readouterr().err
    logged = (run / "metrics.jsonl").read_text()
    assert '"distill_hint"' in logged and '"distill_hint_weighted"' in logged
    shares = [json.loads(line) for line in logged.splitlines() if '"grad_share"' in line]
    assert [r["step"] for r in shares] == [1, 2]  # every iteration (2 batches of 2)
    fpn = [v["fpn"] for v in shares[0]["shares"].values() if v["fpn"] is not None]
    assert abs(sum(fpn) - 1) < 1e-3 and shares[0]["shares"]["distill_hint"]["rpn"] == 0.0  # hints skip the RPN
    state = torch.load(run / "last.pt", weights_only=True)
    assert any(k.startswith("adapters.") for k in state["module"])
    export_student(str(run / "last.pt"), str(tmp_path / "student.pt"))
    assert len(checkpoint_test_set(str(run / "last.pt"))) > 0  # the ONNX check's images, from a distill run
    plain = build_model(distill_config("lowres", teacher_files).model, NUM_CLASSES)
    plain.load_state_dict(torch.load(tmp_path / "student.pt", weights_only=True), strict=True)


def test_a_three_level_mobilenet_student_learns_from_a_five_level_teacher(teacher_files: tuple[Path, Path]) -> None:
    # torchvision's MobileNetV3-Large FPN: 3 levels (strides 32, 32, 64), 256 channels, 15 anchors
    # a cell: hints pair it with the teacher's stride-32 and pool levels through adapters; its
    # anchors match none of the teacher's, so the RPN terms are switched off (with a warning)
    overrides = ["model.preset=null", "model.backbone=mobilenet_v3_large", "model.norm=gn",
                 "model.trainable_layers=6", "model.rpn.anchor_layout=all_levels", "model.fpn_channels=256"]
    task = build_distill_task(distill_config("small", teacher_files, *overrides), NUM_CLASSES)
    assert task.pairing.pairs == (("0", "3"), ("1", "3"), ("pool", "pool"))
    assert {s: a.in_channels for s, a in task.module.adapters.items()} == {"0": 256, "1": 256, "pool": 256}
    history = train_steps(task, 2)
    assert {k for k in history[-1] if k.startswith("distill_")} == {"distill_rcn_cls", "distill_rcn_reg", "distill_hint"}


def test_dist_on_the_rpn_is_refused(teacher_files: tuple[Path, Path]) -> None:
    with pytest.raises(DetkdError, match="RoI head only"):
        build_distill_task(distill_config("small", teacher_files, "distill.rpn_cls.loss=dist"), NUM_CLASSES)


@pytest.mark.parametrize("overrides", [
    ["distill.hint.loss=pkd"], ["distill.hint.mask=objects"], ["distill.hint.loss=pkd", "distill.hint.mask=objects"],
    ["distill.hint.loss=cwd", "distill.hint.mask=objects"], ["distill.hint.loss=mgd", "distill.hint.mask=objects"],
    ["distill.hint.level_weighting=cells"], ["distill.hint.level_weighting=sum"],
    ["distill.rcn_cls.mode=add", "distill.rpn_cls.mode=add"],
])
def test_signal_carrying_variants_train(overrides: list[str], teacher_files: tuple[Path, Path]) -> None:
    task = build_distill_task(distill_config("lowres", teacher_files, *overrides), NUM_CLASSES)
    history = train_steps(task, 2)
    assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values())
    assert history[0]["distill_hint"] > 0


def test_additive_classification_keeps_the_hard_loss_at_full_weight(teacher_files: tuple[Path, Path]) -> None:
    paper = build_distill_task(distill_config("small", teacher_files), NUM_CLASSES).loss_weights
    add = build_distill_task(distill_config("small", teacher_files, "distill.rcn_cls.mode=add",
                                            "distill.rcn_cls.weight=0.3"), NUM_CLASSES).loss_weights
    assert (paper["loss_classifier"], paper["distill_rcn_cls"]) == (0.5, 0.5)  # mu, 1 - mu
    assert (add["loss_classifier"], add["distill_rcn_cls"]) == (1.0, 0.3)
    assert add["loss_objectness"] == 0.5  # the RPN keeps its interpolation


def test_level_weights(teacher_files: tuple[Path, Path]) -> None:
    from detkd.config import HintSection
    from detkd.distill.task import hint_level_weights

    cells = [300, 100, 0, 100]
    assert hint_level_weights(HintSection(), cells).tolist() == [0.25] * 4
    assert hint_level_weights(HintSection(level_weighting="cells"), cells).tolist() == [0.6, 0.2, 0.0, 0.2]
    assert hint_level_weights(HintSection(level_weighting="sum"), cells).tolist() == [1.0] * 4
    assert hint_level_weights(HintSection(level_weights=[2, 1, 1, 0]), cells).tolist() == [0.5, 0.25, 0.25, 0.0]
    with pytest.raises(DetkdError, match="level_weights has 2 weights for 4 hinted levels"):
        build_distill_task(distill_config("lowres", teacher_files, "distill.hint.level_weights=[1,2]"), NUM_CLASSES)
    # the objects mask averages over fewer cells than the valid area, and the hint follows its weights
    task = build_distill_task(distill_config("lowres", teacher_files, "distill.hint.mask=objects"), NUM_CLASSES)
    images, targets = batch()
    task.module.train()
    out = task.module(images, targets)
    from detkd.distill.teacher import run_teacher

    teacher = run_teacher(task.teacher, images)
    values, masked = task.hint_levels(out, teacher)
    plain = build_distill_task(distill_config("lowres", teacher_files), NUM_CLASSES)
    plain.module.load_state_dict(task.module.state_dict())
    _, valid = plain.hint_levels(out, teacher)
    assert all(0 < m < v for m, v in zip(masked, valid)) and len(values) == len(masked)
    assert task.hint_term(out, teacher).item() == pytest.approx(values.mean().item())


def test_student_init_teacher_starts_from_the_teachers_weights(teacher_files: tuple[Path, Path], tmp_path: Path) -> None:
    from detkd.experiments.runner import Cell, cell_config

    config, checkpoint = teacher_files
    task = build_distill_task(distill_config("lowres", teacher_files, "student.init=teacher"), NUM_CLASSES)
    teacher = task.teacher.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in task.module.student.state_dict().items())
    assert task.module.student.transform.min_size == (64,)  # the student's own resolution
    # its baseline (the plain cell of the same config) starts from the teacher too
    overrides = (f"teacher.config={config}", f"teacher.checkpoint={checkpoint}", "student.init=teacher")
    baseline = cell_config(Cell("b", str(REPO / "configs" / "synth" / "distill_lowres.yaml"), overrides, plain=True),
                           str(tmp_path / "run"))
    assert baseline.model.checkpoint == str(checkpoint) and not hasattr(baseline, "student")
    with pytest.raises(DetkdError, match="give one starting point"):
        build_distill_task(distill_config("lowres", teacher_files, "student.init=teacher",
                                          f"model.checkpoint={tmp_path / 'other.pt'}"), NUM_CLASSES)


@pytest.mark.parametrize("kind", ["small", "lowres"])
def test_baseline_and_distilled_student_are_paired(kind: str, teacher_files: tuple[Path, Path], tmp_path: Path) -> None:
    """At one seed the trainer builds the distilled student with the baseline's initial weights,
    and both see the same images in the same order and draw the same first samples."""
    from detkd.data.synth import ensure_synth
    from detkd.engine.distributed import init_distributed
    from detkd.engine.task import build_detector_task
    from detkd.engine.trainer import Trainer
    from detkd.experiments.runner import Cell, cell_config

    config, checkpoint = teacher_files
    root = ensure_synth(str(tmp_path / "synth"), 10, 0)
    common = (f"teacher.config={config}", f"teacher.checkpoint={checkpoint}", f"data.root={root}", "data.synth.images=10",
              "data.num_workers=0", "device=cpu", "seed=3", *STUDENT_SIZE[kind])
    path = str(REPO / "configs" / "synth" / f"distill_{kind}.yaml")
    built = {}
    for name, plain in (("baseline", True), ("distilled", False)):
        cfg = cell_config(Cell(name, path, common, plain=plain), str(tmp_path / name))
        trainer = Trainer(cfg, init_distributed("cpu"), build_detector_task if plain else build_distill_task)
        trainer.build()
        first = next(iter(trainer.train_loader))
        built[name] = (trainer.task.detector.state_dict(), [t["image_id"] for t in first[1]], torch.rand(4))
    (base, base_ids, base_draw), (dist, dist_ids, dist_draw) = built["baseline"], built["distilled"]
    assert list(base) == list(dist) and all(torch.equal(base[k], dist[k]) for k in base)
    assert base_ids == dist_ids and torch.equal(base_draw, dist_draw)


def test_a_damaged_teacher_file_is_one_clear_error(teacher_files: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = teacher_files
    broken = tmp_path / "teacher.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])  # a truncated copy
    with pytest.raises(DetkdError, match=f"{broken}: not a readable checkpoint"):
        build_distill_task(distill_config("small", (config, broken)), NUM_CLASSES)


def test_unbounded_reg_term_regresses_to_the_teacher() -> None:
    """``bounded: false`` (Table 4's L2 row) pulls the student toward the teacher's deltas, not the
    ground truth's: the target plays no part, and every sample counts."""
    student = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])
    teacher = torch.tensor([[0.0, 0, 0, 0], [0, 1.0, 0, 0]])
    target = student.clone()  # the student is exactly right: an L2 to the target would be 0
    assert reg_term(student, teacher, target, RegTermSection(bounded=False), 4).item() == pytest.approx(2 / 4)
    assert reg_term(student, teacher, target, RegTermSection(bounded=True), 4).item() == 0.0


NEW_TERMS = {"cwd": ["distill.hint.loss=cwd"], "fgd": ["distill.hint.loss=fgd"], "mgd": ["distill.hint.loss=mgd"],
             "dkd": ["distill.rcn_cls.loss=dkd", "distill.rcn_cls.mode=add"]}


@pytest.mark.parametrize("kind", ["small", "lowres"])
@pytest.mark.parametrize("term", list(NEW_TERMS))
def test_each_new_term_trains_on_both_student_kinds(term: str, kind: str, teacher_files: tuple[Path, Path]) -> None:
    """Two steps of CWD, FGD, MGD (through the level pairing, at the same or half resolution) or
    DKD on the RoI head: finite, non-zero, gradients into the student and its learned blocks,
    none into the teacher."""
    torch.manual_seed(0)
    task = build_distill_task(distill_config(kind, teacher_files, *NEW_TERMS[term]), NUM_CLASSES)
    history = train_steps(task, 2)
    name = "distill_rcn_cls" if term == "dkd" else "distill_hint"
    assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values())
    assert all(h[name] > 0 for h in history), history
    assert all(p.grad is None for p in task.teacher.parameters())
    assert task.module.student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    blocks = {"fgd": ["student.transform.3.weight", "teacher.transform.3.weight"],
              "mgd": ["0.weight", "2.weight"]}.get(term, [])
    assert sorted(task.module.blocks) == (sorted(task.module.adapters) if blocks else [])
    for level in task.module.blocks.values():  # the zero-initialised last convs learn from the first step
        params = dict(level.named_parameters())
        assert all(params[b].grad is not None and params[b].grad.abs().sum() > 0 for b in blocks)
    if term != "dkd":
        assert all(a.weight.grad.abs().sum() > 0 for a in task.module.adapters.values())


def test_dkd_and_fgd_are_refused_where_they_do_not_apply(teacher_files: tuple[Path, Path]) -> None:
    with pytest.raises(DetkdError, match="RoI head only"):
        build_distill_task(distill_config("small", teacher_files, "distill.rpn_cls.loss=dkd"), NUM_CLASSES)
    with pytest.raises(DetkdError, match=r"'distill.hint.loss' \(fgd\) .*mask: objects does not apply"):
        distill_config("small", teacher_files, "distill.hint.loss=fgd", "distill.hint.mask=objects")


@pytest.mark.parametrize(("term", "kind"), [("cwd", "small"), ("fgd", "lowres"), ("mgd", "small"), ("dkd", "lowres")])
def test_a_student_distilled_with_a_new_term_exports_to_plain_torchvision(
    term: str, kind: str, teacher_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detkd.cli import main
    from detkd.data.synth import ensure_synth
    from detkd.models.export import export_student

    config, checkpoint = teacher_files
    root = ensure_synth(str(tmp_path / "synth"), 6, 0, profile="easy")
    run = tmp_path / "run"
    code = main(["distill", str(REPO / "configs" / "synth" / f"distill_{kind}.yaml"), f"output_dir={run}",
                 f"teacher.config={config}", f"teacher.checkpoint={checkpoint}", f"data.root={root}",
                 "data.synth.images=6", "data.synth.profile=easy", "data.num_workers=0", "data.limit=2", "device=cpu",
                 "train.epochs=1", "train.batch_size=2", "train.eval_every=0", *STUDENT_SIZE[kind], *PAPER,
                 *NEW_TERMS[term]])
    assert code == 0, capsys.readouterr().err
    module = torch.load(run / "last.pt", weights_only=True)["module"]
    assert any(k.startswith("blocks.") for k in module) == (term in ("fgd", "mgd"))
    export_student(str(run / "last.pt"), str(tmp_path / "student.pt"))
    exported = torch.load(tmp_path / "student.pt", weights_only=True)
    assert not any(k.startswith(("blocks.", "adapters.")) for k in exported)
    plain = build_model(distill_config(kind, teacher_files).model, NUM_CLASSES)
    plain.load_state_dict(exported, strict=True)


@pytest.mark.parametrize(("class_map", "message"), [
    ("{circle: nosuch}", r"teacher\.class_map: \{circle: nosuch\}: the teacher has no class 'nosuch' \(no close name; "
                         r"the teacher's classes: circle, cross_orange, "),
    ("{nosuch: circle}", r"teacher\.class_map: \{nosuch: circle\}: 'nosuch' is not a class of the data \(no close name; "
                         r"the data's classes: circle, cross_orange, "),
    ("{circle: square}", r"teacher\.class_map: \{'circle': 'square'\} renames classes, but a teacher checkpoint is "
                         r"trained on the student's classes"),
])
def test_a_class_map_that_cannot_apply_is_refused_for_a_checkpoint_teacher(teacher_files: tuple[Path, Path],
                                                                           class_map: str, message: str) -> None:
    """A teacher checkpoint is trained on the student's classes: the map used to be ignored without a word."""
    with pytest.raises(DetkdError, match=message):
        build_distill_task(distill_config("small", teacher_files, f"teacher.class_map={class_map}"), NUM_CLASSES)
    build_distill_task(distill_config("small", teacher_files, "teacher.class_map={circle: circle}"), NUM_CLASSES)


@pytest.mark.parametrize(("class_map", "message"), [
    ("{circle: nosuch}", r"\{circle: nosuch\}: the teacher has no class 'nosuch' \(closest: couch, bench; the teacher's "
                         r"classes: person, bicycle, car, "),
    ("{nosuch: circle}", r"\{nosuch: circle\}: 'nosuch' is not a class of the data \(no close name; the data's "
                         r"classes: circle, cross_orange, "),
])
def test_a_class_map_entry_naming_no_class_is_refused_for_a_coco_teacher(tmp_path: Path, class_map: str, message: str,
                                                                         synth_args: list[str]) -> None:
    """The classes are matched from the weights' metadata before any weights file is read."""
    coco_teacher = tmp_path / "coco_teacher.yaml"
    coco_teacher.write_text("model: {backbone: resnet50, weights: FasterRCNN_ResNet50_FPN_Weights.COCO_V1}\n")
    cfg = load_config(REPO / "configs" / "synth" / "distill_small.yaml",
                      [f"teacher.config={coco_teacher}", "teacher.checkpoint=''", f"teacher.class_map={class_map}",
                       *synth_args, *STUDENT_SIZE["small"]], schema=DistillConfig)  # the session's data as it is
    with pytest.raises(DetkdError, match=rf"^teacher\.class_map: {message}"):
        build_distill_task(cfg, NUM_CLASSES)


def test_a_distilled_student_can_be_the_teacher(teacher_files: tuple[Path, Path], tmp_path: Path) -> None:
    """A `detkd distill` run's checkpoint (its config a distillation config) as teacher.checkpoint, with
    that run's config.yaml or the student's own config as teacher.config: its student teaches."""
    from detkd.config import save_config

    first = distill_config("small", teacher_files)
    student = build_model(first.model, NUM_CLASSES)
    run_config, checkpoint = tmp_path / "config.yaml", tmp_path / "best.pt"
    save_config(first, run_config)
    torch.save({"model": student.state_dict(), "config": config_to_dict(first), "classes": list(SYNTH_CLASSES)},
               checkpoint)
    student_config = tmp_path / "student.yaml"
    student_config.write_text(f"_base_: {REPO / 'configs' / 'synth' / 'student_small.yaml'}\n"
                              "model: {min_size: 128, max_size: 192}\n")
    for teacher_config in (run_config, student_config):
        task = build_distill_task(distill_config("small", (teacher_config, checkpoint)), NUM_CLASSES)
        taught = task.teacher.state_dict()
        assert all(torch.equal(taught[k], v) for k, v in student.state_dict().items())
