"""The embedded dataset: determinism, content and the three layouts, parsed here by hand.

The files are read with xml.etree / json / line splitting on purpose, independently of
detkd's readers; the cross-format read-back through the readers is tested elsewhere.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from detkd.data.synth import (
    SYNTH_CLASSES,
    draw_image,
    ensure_synth,
    generate_synth,
    image_rng,
    synth_profile,
)
from detkd.errors import DetkdError

N_IMAGES = 30
Obj = tuple[str, tuple[float, float, float, float]]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    summary = generate_synth(str(out), N_IMAGES, seed=3)
    assert summary.out_dir == str(out) and summary.classes == SYNTH_CLASSES
    return out


def annotation_files(root: Path) -> dict[str, bytes]:
    """Every annotation, split and metadata file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in {".xml", ".txt", ".json"}
    }


def voc_objects(root: Path, stem: str) -> tuple[tuple[int, int], list[Obj]]:
    tree = ET.parse(root / "voc" / "Annotations" / f"{stem}.xml").getroot()
    assert tree.findtext("filename") == f"{stem}.png"
    size = (int(tree.findtext("size/width")), int(tree.findtext("size/height")))
    objects = []
    for obj in tree.iter("object"):
        xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert obj.findtext("difficult") in {"0", "1"} and obj.findtext("truncated") in {"0", "1"}
        objects.append((obj.findtext("name"), (xmin - 1.0, ymin - 1.0, float(xmax), float(ymax))))
    return size, objects


def kitti_objects(root: Path, stem: str) -> list[Obj]:
    objects = []
    for line in (root / "kitti" / "label_2" / f"{stem}.txt").read_text().splitlines():
        fields = line.split(" ")
        assert len(fields) == 15
        assert 0.0 <= float(fields[1]) <= 0.5 and fields[2] in {"0", "1", "2"}
        assert fields[3] == "-10" and fields[8:] == ["-1", "-1", "-1", "-1000", "-1000", "-1000", "-10"]
        objects.append((fields[0], tuple(float(v) for v in fields[4:8])))
    return objects


def coco_split(root: Path, split: str) -> dict:
    return json.loads((root / "coco" / "annotations" / f"instances_{split}.json").read_text())


def coco_objects(data: dict) -> dict[str, list[Obj]]:
    names = {c["id"]: c["name"] for c in data["categories"]}
    stems = {im["id"]: Path(im["file_name"]).stem for im in data["images"]}
    objects: dict[str, list[Obj]] = {stem: [] for stem in stems.values()}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and a["area"] == w * h and w > 0 and h > 0
        objects[stems[a["image_id"]]].append((names[a["category_id"]], (x, y, x + w, y + h)))
    return objects


def split_stems(root: Path, split: str) -> list[str]:
    voc = (root / "voc" / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    assert voc == (root / "kitti" / "ImageSets" / f"{split}.txt").read_text().split()
    return voc


def test_same_seed_gives_identical_files_and_other_seed_differs(synth: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_synth(str(again), N_IMAGES, seed=3)
    assert annotation_files(again).keys() == annotation_files(synth).keys()
    assert annotation_files(again) == annotation_files(synth)
    first = "voc/JPEGImages/000001.png"
    assert (again / first).read_bytes() == (synth / first).read_bytes()
    other = tmp_path / "other"
    generate_synth(str(other), N_IMAGES, seed=4)
    xml = "voc/Annotations/000001.xml"
    assert (other / xml).read_bytes() != (synth / xml).read_bytes()
    assert (other / first).read_bytes() != (synth / first).read_bytes()


def test_images_do_not_depend_on_the_image_count(synth: Path, tmp_path: Path) -> None:
    generate_synth(str(tmp_path), 6, seed=3)
    for stem in ("000001", "000006"):
        path = f"voc/Annotations/{stem}.xml"
        assert (tmp_path / path).read_bytes() == (synth / path).read_bytes()


def test_splits_are_disjoint_and_cover_every_image(synth: Path) -> None:
    train, test = split_stems(synth, "train"), split_stems(synth, "test")
    assert not set(train) & set(test)
    assert sorted(train + test) == [f"{i:06d}" for i in range(1, N_IMAGES + 1)]
    assert len(test) == N_IMAGES // 5
    for split, stems in (("train", train), ("test", test)):
        assert sorted(Path(im["file_name"]).stem for im in coco_split(synth, split)["images"]) == stems


def test_files_exist_in_all_three_layouts(synth: Path) -> None:
    for split in ("train", "test"):
        for stem in split_stems(synth, split):
            paths = [
                synth / "voc" / "JPEGImages" / f"{stem}.png",
                synth / "kitti" / "image_2" / f"{stem}.png",
                synth / "coco" / split / f"{stem}.png",
            ]
            assert all(p.is_file() for p in paths), stem
            assert len({p.read_bytes() for p in paths}) == 1
            assert (synth / "voc" / "Annotations" / f"{stem}.xml").is_file()
            assert (synth / "kitti" / "label_2" / f"{stem}.txt").is_file()
    meta = json.loads((synth / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["images"] == N_IMAGES and meta["complete"] is True
    assert (synth / "README.txt").read_text().startswith("detkd synth")


def test_the_same_objects_in_every_format(synth: Path) -> None:
    for split in ("train", "test"):
        data = coco_split(synth, split)
        assert [c["id"] for c in data["categories"]] == list(range(1, len(SYNTH_CLASSES) + 1))
        assert [c["name"] for c in data["categories"]] == list(SYNTH_CLASSES)
        coco = coco_objects(data)
        sizes = {Path(im["file_name"]).stem: (im["width"], im["height"]) for im in data["images"]}
        assert all(im["id"] == int(Path(im["file_name"]).stem) for im in data["images"])
        assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
        for stem in split_stems(synth, split):
            size, voc = voc_objects(synth, stem)
            assert size == sizes[stem]
            assert voc == kitti_objects(synth, stem) == coco[stem], stem


def test_boxes_lie_inside_their_images_with_positive_size(synth: Path) -> None:
    for stem in split_stems(synth, "train") + split_stems(synth, "test"):
        (width, height), objects = voc_objects(synth, stem)
        assert objects
        for _, (x1, y1, x2, y2) in objects:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert x2 - x1 >= 3 and y2 - y1 >= 3


def test_classes_scales_and_occlusion(synth: Path) -> None:
    assert len(SYNTH_CLASSES) >= 6 and len(set(SYNTH_CLASSES)) == len(SYNTH_CLASSES)
    per_image = [objs for split in ("train", "test") for objs in coco_objects(coco_split(synth, split)).values()]
    objects = [o for objs in per_image for o in objs]
    assert {name for name, _ in objects} == set(SYNTH_CLASSES)
    sides = np.array([max(x2 - x1, y2 - y1) for _, (x1, y1, x2, y2) in objects])
    assert (sides <= 12).sum() >= 5 and (sides >= 64).sum() >= 5
    assert ((sides > 12) & (sides < 32)).sum() >= 20
    labels = (synth / "kitti" / "label_2").glob("*.txt")
    occluded = [line.split()[2] for p in labels for line in p.read_text().splitlines()]
    assert {"0", "1"} <= set(occluded)


def test_draw_image_boxes_fit_the_pixels() -> None:
    image, objects = draw_image(image_rng(0, 7))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    height, width = image.shape[:2]
    assert 4 <= len(objects) <= 12
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 0.2 <= obj.visible <= 1 and 0 <= obj.truncated <= 0.5
        assert 1 <= obj.label <= len(SYNTH_CLASSES)


def test_easy_profile_draws_fewer_bigger_objects_on_smaller_images() -> None:
    easy = synth_profile("easy")
    sizes = {(w, h) for w, h in easy.image_sizes}
    extents, counts = [], []
    for index in range(40):
        image, objects = draw_image(image_rng(0, index), easy)
        assert (image.shape[1], image.shape[0]) in sizes
        counts.append(len(objects))
        # an untruncated object's box side is at most its extent (plus rasterisation)
        extents += [max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in objects if o.truncated == 0]
    assert 3 <= min(counts) and max(counts) <= 8
    assert max(extents) <= easy.extent[1] + 2 and np.median(extents) >= 16
    standard, _ = draw_image(image_rng(0, 0))
    assert standard.shape[0] >= 288  # the default profile is unchanged
    with pytest.raises(DetkdError, match="unknown synth profile"):
        synth_profile("hard")


def test_ensure_synth_regenerates_for_another_profile(tmp_path: Path) -> None:
    out = tmp_path / "cache"
    ensure_synth(str(out), 5, seed=1)
    ensure_synth(str(out), 5, seed=1, profile="easy")
    meta = json.loads((out / "synth.json").read_text())
    easy_sizes = [list(size) for size in synth_profile("easy").image_sizes]
    assert meta["profile"] == "easy" and meta["image_sizes"] == easy_sizes
    root = ET.parse(out / "voc" / "Annotations" / "000001.xml").getroot()
    width, height = (int(root.findtext(f"size/{k}")) for k in ("width", "height"))
    assert [width, height] in easy_sizes


def test_ensure_synth_reuses_a_matching_folder_and_regenerates_otherwise(tmp_path: Path) -> None:
    out = tmp_path / "cache"
    assert ensure_synth(str(out), 5, seed=1) == str(out)
    meta = out / "synth.json"
    os.utime(meta, (1, 1))
    ensure_synth(str(out), 5, seed=1)
    assert meta.stat().st_mtime == 1  # untouched
    ensure_synth(str(out), 6, seed=1)
    assert json.loads(meta.read_text())["images"] == 6
    assert len(list((out / "voc" / "Annotations").iterdir())) == 6


def test_refuses_to_overwrite_a_foreign_dataset_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "voc").mkdir()
    with pytest.raises(DetkdError, match="not written by"):
        generate_synth(str(tmp_path), 3)
    assert (tmp_path / "voc").is_dir()
    with pytest.raises(DetkdError, match="seed"):
        generate_synth(str(tmp_path / "new"), 3, seed=-1)
    with pytest.raises(DetkdError, match="image"):
        generate_synth(str(tmp_path / "new"), 0)


def test_classes_are_sorted_so_default_label_orders_agree() -> None:
    assert list(SYNTH_CLASSES) == sorted(SYNTH_CLASSES)
