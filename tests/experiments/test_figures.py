"""The demo report's figures: each writes a PNG that decodes, has a sensible size and is not blank."""

from __future__ import annotations

import json

import cv2
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DetkdError
from detkd.experiments.figures import (
    MODEL_STYLES,
    ModelPoint,
    class_color,
    detections_grid,
    draw_detections,
    images_and_ground_truth,
    is_informative_png,
    moving_average,
    plot_per_class_ap,
    plot_speed_accuracy,
    plot_training_curves,
    predictions_for_images,
)

CLASSES = ("circle", "square", "triangle")


def png_pixels(path) -> np.ndarray:
    return np.asarray(mpimg.imread(str(path)))


def distinct_colors(path) -> int:
    pixels = png_pixels(path)[..., :3]
    return len(np.unique((pixels.reshape(-1, 3) * 255).round().astype(np.uint8), axis=0))


def assert_figure(path, min_size=(300, 400), min_colors=6) -> None:
    assert is_informative_png(str(path))
    h, w = png_pixels(path).shape[:2]
    assert min_size[0] <= h <= 3000 and min_size[1] <= w <= 4000, (h, w)
    assert distinct_colors(path) > min_colors


def write_metrics(path, distill: bool, steps=range(10, 310, 10)) -> str:
    lines = []
    for step in steps:
        decay = 1.0 / (1.0 + step / 60)
        rec = {"type": "train", "step": step, "epoch": step // 100, "iter": step % 100, "lr": 1e-3,
               "loss_classifier": 0.9 * decay, "loss_box_reg": 0.2 * decay, "loss_objectness": 0.4 * decay,
               "loss_rpn_box_reg": 0.02, "img_per_s": 6.0}
        rec["loss"] = sum(rec[k] for k in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"))
        if distill:
            rec.update(distill_rcn_cls=0.5 * decay, distill_rcn_cls_weighted=0.25 * decay, distill_hint=0.1)
            rec["loss"] += 0.25 * decay + 0.1
        lines.append(json.dumps(rec))
        if step % 100 == 0:
            lines.append(json.dumps({"type": "eval", "step": step, "epoch": step // 100, "metrics": {"voc": {"mAP": 0.5}}}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_speed_accuracy_plot(tmp_path) -> None:
    points = [ModelPoint("teacher", 120.0, 0.82), ModelPoint("student_small", 30.0, 0.55, 4.0),
              ModelPoint("student_small_kd", 30.5, 0.63, 3.9), ModelPoint("student_lowres", 12.0, 0.48, 10.0),
              ModelPoint("student_lowres_kd", 12.1, 0.60, 9.9), ModelPoint("unscored", 5.0, None)]
    out = plot_speed_accuracy(points, str(tmp_path / "sub" / "speed.png"), "five models")
    assert out == str(tmp_path / "sub" / "speed.png")
    assert_figure(out, min_colors=20)
    with pytest.raises(DetkdError, match="nothing to plot"):
        plot_speed_accuracy([ModelPoint("teacher", 10.0, None)], str(tmp_path / "none.png"), "t")


def test_per_class_plot_with_a_missing_value(tmp_path) -> None:
    per_class = {"teacher": {"circle": 0.9, "square": 0.8, "triangle": 0.7},
                 "student_lowres": {"circle": 0.6, "square": None, "triangle": 0.4},
                 "student_lowres_kd": {"circle": 0.7, "square": 0.5, "triangle": 0.55}}
    out = plot_per_class_ap(per_class, str(tmp_path / "per_class.png"), "AP50 per class")
    assert_figure(out, min_colors=10)


def test_training_curves_read_two_runs_and_skip_eval_lines(tmp_path) -> None:
    runs = {"student_lowres": write_metrics(tmp_path / "base.jsonl", distill=False),
            "student_lowres_kd": write_metrics(tmp_path / "kd.jsonl", distill=True)}
    out = plot_training_curves(runs, str(tmp_path / "curves.png"), "losses")
    assert_figure(out, min_size=(400, 900), min_colors=10)
    # both models' colours are on the plot
    pixels = (png_pixels(out)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    for name in runs:
        rgb = np.array([int(MODEL_STYLES[name].color[i: i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=1) <= 6).sum() > 50, name


def test_training_curves_name_a_missing_or_empty_file(tmp_path) -> None:
    good = write_metrics(tmp_path / "ok.jsonl", distill=False)
    missing = str(tmp_path / "runs" / "nope" / "metrics.jsonl")
    with pytest.raises(DetkdError, match="nope/metrics.jsonl"):
        plot_training_curves({"teacher": good, "student_small": missing}, str(tmp_path / "c.png"), "t")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"type": "eval", "step": 1, "metrics": {}}) + "\n")
    with pytest.raises(DetkdError, match="empty.jsonl.*no training records"):
        plot_training_curves({"teacher": str(empty)}, str(tmp_path / "c.png"), "t")
    assert not (tmp_path / "c.png").exists()


def test_moving_average_is_trailing_and_keeps_the_length() -> None:
    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average([1, 2], 1), [1, 2])


def tiny_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
    return img


def test_draw_detections_marks_the_box_and_leaves_far_pixels() -> None:
    image = tiny_image(120, 160, 0)
    pred = {"boxes": torch.tensor([[80.0, 60.0, 140.0, 110.0], [5.0, 5.0, 20.0, 20.0]]),
            "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([2, 1])}
    out = draw_detections(image, pred, CLASSES, score_thresh=0.5, title="teacher")
    offset = out.shape[0] - image.shape[0]
    assert offset > 0 and out.shape[1:] == image.shape[1:] and out.dtype == np.uint8
    body = out[offset:]
    assert tuple(body[85, 80]) == class_color(2)  # on the left edge of the kept box
    assert tuple(body[109, 110]) == class_color(2)  # on its bottom edge
    assert np.array_equal(body[100, 20], image[100, 20])  # far from the box and its label
    assert np.array_equal(body[12, 12], image[12, 12])  # the low-scoring box is not drawn
    assert np.array_equal(image, tiny_image(120, 160, 0))  # the input is untouched
    plain = draw_detections(image, {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}, CLASSES)
    assert np.array_equal(plain, image)


def test_detections_grid_pads_images_of_different_sizes(tmp_path) -> None:
    images = [tiny_image(120, 160, 1), tiny_image(100, 90, 2)]
    truth = [{"boxes": np.array([[10, 10, 60, 50]], float), "labels": np.array([1])},
             {"boxes": np.array([[20, 30, 70, 90]], float), "labels": np.array([3])}]
    columns = {name: [{**t, "scores": np.array([s])} for t in truth]
               for name, s in (("teacher", 0.95), ("student_lowres", 0.4), ("student_lowres_kd", 0.7))}
    out = detections_grid(images, columns, CLASSES, str(tmp_path / "grid.png"), ground_truth=truth)
    grid = cv2.imread(out)
    assert grid is not None and is_informative_png(out)
    assert 2 * 100 < grid.shape[0] < 2 * 200 and 4 * 160 <= grid.shape[1] < 4 * 200
    assert distinct_colors(out) > 10
    with pytest.raises(DetkdError, match="teacher \\(1\\)"):
        detections_grid(images, {"teacher": truth[:1]}, CLASSES, str(tmp_path / "bad.png"))


def test_predictions_and_ground_truth_for_chosen_images(tmp_path) -> None:
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i:06d}.png"))
        cv2.imwrite(paths[-1], tiny_image(40, 50, i))
    records = [ImageRecord(f"{i:06d}", p, 50, 40, boxes=np.array([[1, 2, 30, 20]], np.float32),
                           labels=np.array([i + 1]), difficult=np.zeros(1, bool))
               for i, p in enumerate(paths)]
    index = DatasetIndex(format="voc", root=str(tmp_path), split=None, classes=CLASSES, records=records)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": "000001", "category_id": 3, "bbox": [1, 2, 10, 20], "score": 0.8}]))
    preds = predictions_for_images(str(results), index, ["000001", "000000"])
    assert [p["image_id"] for p in preds] == ["000001", "000000"]
    np.testing.assert_allclose(preds[0]["boxes"], [[1, 2, 11, 22]])
    assert preds[0]["labels"].tolist() == [3] and len(preds[1]["boxes"]) == 0
    images, truth = images_and_ground_truth(index, ["000001"])
    assert images[0].shape == (40, 50, 3) and truth[0]["labels"].tolist() == [2]
    with pytest.raises(DetkdError, match="'zzz'"):
        predictions_for_images(str(results), index, ["zzz"])


def test_is_informative_png_rejects_blank_and_broken_files(tmp_path) -> None:
    blank = str(tmp_path / "blank.png")
    cv2.imwrite(blank, np.full((20, 20, 3), 255, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert not is_informative_png(blank)
    assert not is_informative_png(str(broken))
    assert not is_informative_png(str(tmp_path / "missing.png"))
