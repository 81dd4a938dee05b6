"""COCO results files: round trip, id conventions, and one DataError per kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detkd.data.dataset import DatasetIndex
from detkd.data.records import ImageRecord
from detkd.errors import DataError, DetkdError
from detkd.evaluation.results import load_results, predictions_to_coco_json, write_results


def record(image_id):
    return ImageRecord(image_id=image_id, file_name=f"/d/{image_id}.jpg", width=640, height=480)


@pytest.fixture
def voc_index():
    return DatasetIndex(format="voc", root="/d", split=None, classes=("cat", "dog"),
                        records=[record("000005"), record("000007"), record("42")])


@pytest.fixture
def coco_index():
    return DatasetIndex(format="coco", root="/d", split=None, classes=("person", "car"),
                        records=[record(139), record(285)], category_ids={1: 1, 2: 3})


def sample_predictions():
    return [
        {"image_id": "000005", "boxes": torch.tensor([[1.5, 2.25, 30.0, 40.0], [0.0, 0.0, 10.0, 10.0]]),
         "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([2, 1])},
        {"image_id": "000007", "boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)},
        {"image_id": "42", "boxes": np.array([[5.0, 6.0, 7.0, 9.0]]), "scores": np.array([0.5]),
         "labels": np.array([1])},
    ]


def test_round_trip(tmp_path, voc_index):
    path = tmp_path / "out" / "dets.json"
    write_results(sample_predictions(), voc_index, path)
    entries = json.loads(path.read_text())
    assert entries[0] == {"image_id": "000005", "category_id": 2, "bbox": [1.5, 2.25, 28.5, 37.75],
                          "score": pytest.approx(0.9)}
    assert not [p for p in path.parent.iterdir() if p.name != "dets.json"]  # no temp file left
    loaded = load_results(path, voc_index)
    assert [p["image_id"] for p in loaded] == ["000005", "000007", "42"]
    for got, want in zip(loaded, sample_predictions()):
        np.testing.assert_allclose(got["boxes"], np.asarray(want["boxes"], np.float32).reshape(-1, 4), atol=1e-5)
        np.testing.assert_array_equal(got["scores"], np.asarray(want["scores"]).astype(np.float64))
        np.testing.assert_array_equal(got["labels"], np.asarray(want["labels"]))
        assert got["boxes"].dtype == np.float64 and got["labels"].dtype == np.int64


def test_coco_ids_and_images_without_detections(tmp_path, coco_index):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 285, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]))
    loaded = load_results(path, coco_index)
    assert [p["image_id"] for p in loaded] == [139, 285]
    assert loaded[0]["boxes"].shape == (0, 4) and loaded[0]["labels"].shape == (0,)
    np.testing.assert_array_equal(loaded[1]["boxes"], [[1, 2, 4, 6]])
    assert loaded[1]["labels"].tolist() == [2]  # category 3 -> label 2
    assert predictions_to_coco_json(loaded, coco_index) == [
        {"image_id": 285, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]


def test_integer_image_id_matches_only_its_exact_decimal_form(tmp_path, voc_index):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    assert len(load_results(path, voc_index)[2]["scores"]) == 1
    path.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    with pytest.raises(DataError, match="entry 0: unknown image_id 5"):
        load_results(path, voc_index)


GOOD = {"image_id": "000005", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}


@pytest.mark.parametrize("bad, message", [
    ({**GOOD, "image_id": "abc"}, "entry 1: unknown image_id 'abc'"),
    ({**GOOD, "category_id": 9}, "entry 1: unknown category_id 9"),
    ({**GOOD, "category_id": "1"}, "entry 1: unknown category_id '1'"),
    ({k: v for k, v in GOOD.items() if k != "score"}, "entry 1: missing key\\(s\\) 'score'"),
    ({**GOOD, "bbox": [0, 0, 5]}, "entry 1: bbox must be a list of 4 numbers"),
    ({**GOOD, "bbox": [0, 0, "5", 5]}, "entry 1: bbox must be a list of 4 numbers"),
    ({**GOOD, "bbox": [0, 0, -1, 5]}, "entry 1: bbox has a negative width"),
    ({**GOOD, "bbox": [0, 0, 1, -5]}, "entry 1: bbox has a negative height"),
    ({**GOOD, "bbox": [0, 0, float("inf"), 5]}, "entry 1: bbox has a non-finite number"),
    ({**GOOD, "score": float("nan")}, "entry 1: score must be a finite number"),
    ({**GOOD, "score": None}, "entry 1: score must be a finite number"),
    ([1, 2], "entry 1: expected an object, got list"),
])
def test_bad_entries_name_the_file_and_entry(tmp_path, voc_index, bad, message):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([GOOD, bad]))  # json.dumps writes NaN / Infinity, as Python does
    with pytest.raises(DataError, match=message) as info:
        load_results(path, voc_index)
    assert str(info.value).startswith(str(path))


def test_malformed_json_names_the_line(tmp_path, voc_index):
    path = tmp_path / "dets.json"
    path.write_text('[\n  {"image_id": "000005",\n  "category_id": 1,,\n]')
    with pytest.raises(DataError, match="malformed JSON") as info:
        load_results(path, voc_index)
    assert info.value.line == 3 and str(info.value).startswith(f"{path}:3: ")


def test_not_a_list_and_missing_file(tmp_path, voc_index):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_results(path, voc_index)
    with pytest.raises(DataError, match="not found") as info:
        load_results(tmp_path / "nope.json", voc_index)
    assert "nope.json" in str(info.value)


def test_writing_bad_predictions_is_a_clear_error(tmp_path, voc_index):
    with pytest.raises(DetkdError, match="unknown image_id"):
        write_results([{**sample_predictions()[0], "image_id": "zzz"}], voc_index, tmp_path / "x.json")
    with pytest.raises(DetkdError, match="lacks key"):
        write_results([{"image_id": "000005"}], voc_index, tmp_path / "x.json")
    assert not list(tmp_path.iterdir())
