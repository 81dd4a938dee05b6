"""The VOC reader on BCCD (counts checked against the raw XML) and on broken files."""

from __future__ import annotations

import re
import time
import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkd.data import VOC_CLASSES, DataWarning, DetectionDataset, read_voc
from detkd.errors import DataError

OBJECT = re.compile(
    r"<object>.*?<name>(.*?)</name>.*?<xmin>(.*?)</xmin>\s*<ymin>(.*?)</ymin>\s*<xmax>(.*?)</xmax>\s*<ymax>(.*?)</ymax>",
    re.S,
)


def raw_objects(root: Path, stems: list[str] | None = None) -> list[tuple[str, list[float]]]:
    """Every object of the XML files, parsed with a regex (independently of the reader)."""
    files = sorted((root / "Annotations").glob("*.xml")) if stems is None else [root / "Annotations" / f"{s}.xml" for s in stems]
    return [(m[0].strip(), [float(v) for v in m[1:]]) for f in files for m in OBJECT.findall(f.read_text())]


@pytest.fixture(scope="module")
def bccd(bccd_root: Path):
    with pytest.warns(DataWarning, match="dropped 2 box"):
        return read_voc(str(bccd_root), split=None)


def test_bccd_counts_match_the_xml_files(bccd_root: Path, bccd) -> None:
    objects = raw_objects(bccd_root)
    degenerate = [o for o in objects if o[1][2] <= o[1][0] or o[1][3] <= o[1][1]]
    assert len(degenerate) == 2
    assert len(bccd.records) == len(list((bccd_root / "Annotations").glob("*.xml"))) == 364
    assert bccd.classes == tuple(sorted({name for name, _ in objects})) == ("Platelets", "RBC", "WBC")
    kept = Counter(name for name, box in objects if (name, box) not in degenerate)
    got = Counter(bccd.classes[k - 1] for r in bccd.records for k in r.labels)
    assert got == kept and sum(got.values()) == len(objects) - 2
    assert len(bccd.report.dropped) == 2 and not bccd.report.clipped
    assert any("BloodImage_00338.xml" in w for w in bccd.report.dropped)


def test_bccd_boxes_are_converted_from_one_based_pixels(bccd_root: Path, bccd) -> None:
    rec = next(r for r in bccd.records if r.image_id == "BloodImage_00000")
    name, (xmin, ymin, xmax, ymax) = raw_objects(bccd_root, ["BloodImage_00000"])[0]
    assert bccd.classes[rec.labels[0] - 1] == name
    np.testing.assert_allclose(rec.boxes[0], [xmin - 1, ymin - 1, xmax, ymax])
    assert (rec.width, rec.height) == (640, 480)
    assert rec.file_name.endswith("JPEGImages/BloodImage_00000.jpg")
    assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64 and rec.difficult.dtype == bool


def test_bccd_split_file(bccd_root: Path) -> None:
    stems = (bccd_root / "ImageSets" / "Main" / "test.txt").read_text().split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        index = read_voc(str(bccd_root), split="test")
    assert [r.image_id for r in index.records] == stems
    objects = raw_objects(bccd_root, stems)
    good = [o for o in objects if o[1][2] > o[1][0] and o[1][3] > o[1][1]]
    assert sum(len(r.boxes) for r in index.records) == len(good)


def test_classes_left_out_are_counted_by_name(bccd_root: Path) -> None:
    objects = Counter(name for name, _ in raw_objects(bccd_root))
    with pytest.warns(DataWarning, match="left out"):
        index = read_voc(str(bccd_root), split=None, classes=VOC_CLASSES)
    assert index.classes == VOC_CLASSES and len(VOC_CLASSES) == 20
    assert sum(len(r.boxes) for r in index.records) == 0
    assert index.report.skipped_classes == objects
    with pytest.warns(DataWarning):
        index = read_voc(str(bccd_root), split=None, classes=["WBC", "RBC"])
    assert index.report.skipped_classes == Counter({"Platelets": objects["Platelets"]})
    assert {int(k) for r in index.records for k in r.labels} == {1, 2}


# --- small VOC folders written into tmp_path ---------------------------------------------------


def obj_xml(name: str, box: tuple, difficult: int = 0) -> str:
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"


def ann_xml(stem: str, objects: list[str], size: tuple | None = (64, 48)) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation>\n<filename>{stem}.jpg</filename>\n{size_xml}\n{''.join(objects)}\n</annotation>\n"


def make_voc(root: Path, anns: dict[str, str], split: list[str] | None = None, image: bool = True) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, text in anns.items():
        (root / "Annotations" / f"{stem}.xml").write_text(text)
        if image:
            cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.full((48, 64, 3), 128, np.uint8))
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(split if split is not None else anns) + "\n")
    return root


def test_difficult_objects_are_kept_and_flagged(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [obj_xml("cat", (1, 1, 10, 10), 1), obj_xml("dog", (5, 5, 20, 20))])})
    index = read_voc(str(root), split="train")
    rec = index.records[0]
    assert index.classes == ("cat", "dog")
    assert rec.labels.tolist() == [1, 2] and rec.difficult.tolist() == [True, False]


def test_size_from_the_image_header_when_the_xml_has_none(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [obj_xml("cat", (1, 1, 10, 10))], size=None),
                                     "b": ann_xml("b", [], size=(0, 0))})  # fmt: skip
    index = read_voc(str(root), split=None)
    assert [(r.width, r.height) for r in index.records] == [(64, 48), (64, 48)]
    assert len(index.records[1].boxes) == 0


def test_degenerate_boxes_dropped_and_outside_boxes_clipped_with_one_warning(tmp_path: Path) -> None:
    objects = [obj_xml("cat", (10, 10, 10, 20)), obj_xml("cat", (30, 10, 20, 20)), obj_xml("cat", (0, 5, 70, 60)),
               obj_xml("cat", (100, 100, 120, 120)), obj_xml("cat", (2, 2, 8, 8))]  # fmt: skip
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", objects)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = read_voc(str(root), split="train")
    data_warnings = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(data_warnings) == 1
    message = str(data_warnings[0].message)
    assert "dropped 2 box(es) with zero or negative size" in message and "clipped 1 box(es)" in message
    assert "dropped 1 box(es) wholly outside the image" in message  # each reason said apart
    assert all("a.xml" in w for w in index.report.dropped + index.report.outside + index.report.clipped)
    np.testing.assert_allclose(index.records[0].boxes, [[0, 4, 64, 48], [1, 1, 8, 8]])


def test_misspelt_class_is_left_out_and_counted(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [obj_xml("cat", (1, 1, 9, 9)), obj_xml("caat", (1, 1, 9, 9))])})
    with pytest.warns(DataWarning, match="caat: 1"):
        index = read_voc(str(root), split="train", classes=["cat", "dog"])
    assert index.records[0].labels.tolist() == [1]


def test_a_name_that_differs_from_a_class_only_in_case_or_spaces_is_named(tmp_path: Path) -> None:
    """'wbc ' next to 'WBC': left out (classes given) or a class of its own (classes found), either way said."""
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [obj_xml("WBC", (1, 1, 9, 9)), obj_xml("wbc ", (2, 2, 9, 9)),
                                                        obj_xml("RBC", (1, 1, 5, 5))])})
    with pytest.warns(DataWarning, match=r"left out 1 object\(s\) of classes not selected \(wbc: 1, like 'WBC' but for "
                                         r"case or spaces\)"):
        index = read_voc(str(root), split="train", classes=["WBC", "RBC"])
    assert index.records[0].labels.tolist() == [1, 2] and index.report.variants == {"wbc": "WBC"}
    with pytest.warns(DataWarning, match=r"classes that differ only in case or spaces: 'wbc' and 'WBC' \(a typo\?\)"):
        index = read_voc(str(root), split="train")
    assert index.classes == ("RBC", "WBC", "wbc")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<annotation>\n<object><name>cat</name>\n</annotation>\n", r"a\.xml:3: malformed XML"),
        (ann_xml("a", [obj_xml("cat", (1, "one", 9, 9))]), r"a\.xml: object 1 \(cat\) <ymin> is not a number"),
        (ann_xml("a", [obj_xml("cat", (1, 1, 9, ""))]), r"a\.xml: object 1 \(cat\) <ymax> is missing"),
        (ann_xml("a", ["<object><name>cat</name></object>"]), r"a\.xml: object 1 \(cat\) has no <bndbox>"),
        (ann_xml("a", [obj_xml("", (1, 1, 9, 9))]), r"a\.xml: object 1 has no <name>"),
        ("<root></root>", r"a\.xml: expected an <annotation>"),
    ],
)
def test_malformed_xml_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    root = make_voc(tmp_path / "v", {"a": text})
    with pytest.raises(DataError, match=match):
        read_voc(str(root), split="train")


def test_split_listing_a_missing_annotation(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [])}, split=["a", "", "zz"])
    with pytest.raises(DataError, match=r"train\.txt:3: lists zz but its annotation .*zz\.xml is missing"):
        read_voc(str(root), split="train")
    with pytest.raises(DataError, match=r"val\.txt: split file for split 'val' is missing"):
        read_voc(str(root), split="val")


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [])}, image=False)
    with pytest.raises(DataError, match=r"a\.xml: no image a\.\{"):
        read_voc(str(root), split="train")
    for content in (b"not a jpeg", b""):  # text and 0-byte files are refused when the data is indexed
        (root / "JPEGImages" / "a.jpg").write_bytes(content)
        with pytest.raises(DataError, match=r"a\.jpg: unreadable image"):
            read_voc(str(root), split="train")


def test_truncated_images_are_refused_when_read(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [obj_xml("cat", (1, 1, 9, 9))])})
    jpg = root / "JPEGImages" / "a.jpg"
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    jpg.write_bytes(data.tobytes()[: len(data) // 2])  # the header and half the scan: decoders fill grey
    dataset = DetectionDataset(read_voc(str(root), split="train"))  # the header is whole: indexing is fine
    with pytest.raises(DataError, match=r"a\.jpg: truncated image \(no JPEG end-of-image marker\)"):
        dataset[0]
    png = root / "JPEGImages" / "a.png"
    jpg.unlink()
    ok, data = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    png.write_bytes(data.tobytes()[:-20])
    with pytest.raises(DataError, match=r"a\.png: truncated image \(no PNG IEND chunk\)"):
        DetectionDataset(read_voc(str(root), split="train"))[0]


def test_the_image_file_gives_the_size_not_a_disagreeing_annotation(tmp_path: Path) -> None:
    # the XML says 32x24 for a 64x48 image: its boxes are not clipped (or dropped) to the wrong size
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", [obj_xml("cat", (40, 30, 60, 45))], size=(32, 24))})
    with pytest.warns(DataWarning, match=r"1 image\(s\) whose annotated size differs .*annotated 32x24, file 64x48"):
        index = read_voc(str(root), split="train")
    rec = index.records[0]
    assert (rec.width, rec.height) == (64, 48)
    np.testing.assert_allclose(rec.boxes, [[39, 29, 60, 45]])


def test_an_id_listed_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", []), "b": ann_xml("b", [])}, split=["a", "b", "a"])
    with pytest.raises(DataError, match=r"train\.txt:3: a is listed twice \(first at line 1\)"):
        read_voc(str(root), split="train")


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path: Path) -> None:
    """Windows editors start a UTF-8 file with a BOM; it used to show up inside the first stem."""
    root = make_voc(tmp_path / "v", {"a": ann_xml("a", []), "b": ann_xml("b", [])})
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    assert [r.image_id for r in read_voc(str(root), split="train").records] == ["a", "b"]


def test_indexing_is_quick(tmp_path: Path) -> None:
    anns = {f"{i:06d}": ann_xml(f"{i:06d}", [obj_xml("cat", (1, 1, 9, 9)), obj_xml("dog", (3, 3, 30, 30))]) for i in range(2000)}
    root = make_voc(tmp_path / "v", anns, image=False)
    ok, tiny = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    for stem in anns:
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes(tiny.tobytes())
    start = time.perf_counter()
    index = read_voc(str(root), split="train")
    assert time.perf_counter() - start < 2.0  # ~16k files (VOC 07+12) in well under 20 s
    assert len(index.records) == 2000


def test_exif_orientation_is_ignored_by_the_header_and_by_the_decoder_alike(tmp_path: Path) -> None:
    from PIL import Image

    from detkd.data.images import image_size, read_rgb

    path = tmp_path / "rotated.jpg"
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    Image.fromarray(pixels).save(path, exif=exif)
    decoded = read_rgb(str(path))
    assert image_size(str(path)) == (64, 48) and decoded.shape[:2] == (48, 64)  # the stored grid, both times
    assert decoded[:, :30].mean() > 200 and decoded[:, 34:].mean() < 50
