"""Helpers the three readers share: box checks, class lists, split lists and the one warning."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from detkd.data.images import IMAGE_EXTENSIONS, image_size
from detkd.data.records import LoadReport
from detkd.errors import DataError, DetkdError

# Overshoot (pixels) below which clipping a box to the image is float noise, not worth reporting.
CLIP_TOLERANCE = 1e-3


class DataWarning(UserWarning):
    """The one warning a reader emits about boxes it dropped or clipped and classes it left out."""


def check_box(
    report: LoadReport, box: Sequence[float], width: int, height: int, where: str
) -> tuple[float, float, float, float] | None:
    """``box`` (xyxy, continuous pixels) clipped to the image, or None when it must be dropped.

    A box with zero or negative size (``report.dropped``) or wholly outside the image
    (``report.outside``) is dropped; one that reaches outside the image is clipped to it
    (``report.clipped``), each recorded at ``where``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        report.dropped.append(where)
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        report.outside.append(where)
        return None
    if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > CLIP_TOLERANCE:
        report.clipped.append(where)
    return cx1, cy1, cx2, cy2


def checked_size(report: LoadReport, image: str, annotated: tuple[int, int] | None, where: str) -> tuple[int, int]:
    """The image's ``(width, height)`` from its file header; an annotated size that differs is
    recorded in ``report`` (the file's is used: boxes are clipped to the real image)."""
    actual = image_size(image)
    if annotated is not None and tuple(annotated) != tuple(actual):
        report.size_mismatch.append(f"{where}: annotated {annotated[0]}x{annotated[1]}, file {actual[0]}x{actual[1]}")
    return actual


def parse_number(text: str | None, path: str, what: str, line: int | None = None) -> float:
    """A finite float from ``text``, or a DataError naming the file, the line and the field."""
    if text is None or not text.strip():
        raise DataError(path, f"{what} is missing", line)
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"{what} is not a number: {text!r}", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"{what} is not a finite number: {text!r}", line)
    return value


def check_classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    """The selected class names as a tuple, after checking they are non-empty and distinct."""
    if classes is None:
        return None
    names = tuple(str(c) for c in classes)
    if not names:
        raise DetkdError("the class list is empty")
    if any(not n.strip() for n in names):
        raise DetkdError(f"empty class name in {list(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DetkdError(f"class(es) named twice: {', '.join(dupes)}")
    return names


def read_list_file(path: str) -> list[tuple[int, str]]:
    """``(line number, stem)`` for each non-empty line of a split file (an extension is dropped).

    An id listed twice is an error naming both lines: it would duplicate the image's ground truth
    and make perfect detections score below 1. A UTF-8 byte-order mark (Windows editors) is not
    part of the first id."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(path, f"cannot read the split file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(path, "the split file is not UTF-8 text") from None
    entries, first_line = [], {}
    for number, text in enumerate(lines, start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        stem = text.split()[0]  # VOC class split files have "stem flag"
        base, ext = os.path.splitext(stem)
        if ext in IMAGE_EXTENSIONS or ext in (".txt", ".xml"):
            stem = base
        if stem in first_line:
            raise DataError(path, f"{stem} is listed twice (first at line {first_line[stem]})", number)
        first_line[stem] = number
        entries.append((number, stem))
    return entries


def list_stems(folder: str, extensions: Iterable[str]) -> dict[str, str]:
    """``{stem: file name}`` of the files in ``folder`` with one of ``extensions`` (one listing)."""
    exts = tuple(extensions)
    found: dict[str, str] = {}
    try:
        with os.scandir(folder) as it:
            for entry in it:
                stem, ext = os.path.splitext(entry.name)
                if ext in exts and stem not in found:
                    found[stem] = entry.name
    except FileNotFoundError:
        raise DataError(folder, "folder is missing") from None
    except NotADirectoryError:
        raise DataError(folder, "is not a folder") from None
    return found


def boxes_array(boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """``[N, 4]`` float32 (also for N = 0)."""
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def labels_array(labels: list[int]) -> np.ndarray:
    """``[N]`` int64 (also for N = 0)."""
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def warn_report(report: LoadReport, dataset: str, classes: Sequence[str] = ()) -> None:
    """Emit ONE :class:`DataWarning` that sums up ``report`` (nothing when it is clean), after
    noting the names that differ from one of ``classes`` only in case or spaces."""
    note_variants(report, classes)
    lines = report.summary_lines(dataset)
    if lines:
        warnings.warn("; ".join(lines), DataWarning, stacklevel=3)


def note_variants(report: LoadReport, classes: Sequence[str]) -> None:
    """Record in ``report.variants`` each left-out name, and each class after the first of its
    kind, that differs from a class only in case or spaces (``wbc`` next to ``WBC``)."""

    def folded(name: str) -> str:
        return "".join(name.split()).casefold()

    first: dict[str, str] = {}
    for name in classes:
        if first.get(folded(name), name) != name:  # the same name twice (COCO categories) is not a variant
            report.variants[name] = first[folded(name)]
        first.setdefault(folded(name), name)
    for name in report.skipped_classes:
        if folded(name) in first:
            report.variants[name] = first[folded(name)]
