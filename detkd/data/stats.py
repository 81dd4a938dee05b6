"""What a dataset holds, as the readers keep it: counts for ``detkd data stats``."""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from detkd.data.dataset import DatasetIndex
from detkd.data.images import check_file_end, read_rgb
from detkd.errors import DataError


def dataset_stats(index: DatasetIndex) -> dict[str, Any]:
    """Counts of an index, JSON-ready.

    Keys: ``format``, ``split``, and the integers ``images``, ``empty_images`` (no kept box),
    ``boxes`` (kept objects, ignore regions not counted), ``ignored`` (DontCare and crowd
    regions), ``difficult``, ``dropped``, ``clipped``; and the maps ``per_class`` (class name ->
    kept boxes, every class in label order) and ``skipped_classes`` (name -> objects left out).
    """
    counts = np.zeros(index.num_classes + 1, dtype=np.int64)
    empty = ignored = difficult = 0
    for rec in index.records:
        counts += np.bincount(rec.labels, minlength=len(counts))[: len(counts)]
        empty += int(len(rec.boxes) == 0)
        ignored += len(rec.ignore_boxes)
        difficult += int(np.count_nonzero(rec.difficult))
    return {
        "format": index.format,
        "split": index.split,
        "images": len(index.records),
        "empty_images": empty,
        "boxes": int(counts[1:].sum()),
        "ignored": ignored,
        "difficult": difficult,
        "dropped": len(index.report.dropped),
        "dropped_outside": len(index.report.outside),
        "clipped": len(index.report.clipped),
        "size_mismatch": len(index.report.size_mismatch),
        "per_class": {name: int(counts[k]) for k, name in enumerate(index.classes, start=1)},
        "skipped_classes": dict(sorted(index.report.skipped_classes.items())),
    }


def check_images(index: DatasetIndex, decode: bool = True) -> list[str]:
    """``"file: problem"`` for each image of ``index`` that training would refuse, checked once
    each (with a progress bar). ``decode``: decoded whole (unreadable, truncated, or pixels of
    another size than its record); else only read at its ends for a cut-off file
    (:func:`~detkd.data.images.check_file_end`: a truncated or header-only JPEG or PNG)."""

    bad = []
    for record in tqdm(index.records, desc="decoding images" if decode else "checking image ends", disable=None,
                       leave=False):
        try:
            image = read_rgb(record.file_name) if decode else check_file_end(record.file_name)
        except DataError as e:
            bad.append(str(e))
            continue
        if image is not None and image.shape[:2] != (record.height, record.width):
            bad.append(f"{record.file_name}: decoded {image.shape[1]}x{image.shape[0]}, indexed "
                       f"{record.width}x{record.height}")
    return bad


def format_stats(stats: dict[str, Any]) -> str:
    """The counts of :func:`dataset_stats` as an aligned plain-text block for the terminal."""
    lines = [
        f"format {stats['format']}, split {stats['split'] if stats['split'] is not None else '(all)'}",
        f"images      {stats['images']:>8}  ({stats['empty_images']} without a box)",
        f"boxes       {stats['boxes']:>8}",
        f"ignored     {stats['ignored']:>8}  (DontCare / crowd regions)",
        f"difficult   {stats['difficult']:>8}",
        f"dropped     {stats['dropped']:>8}  (zero or negative size)",
        f"dropped     {stats['dropped_outside']:>8}  (wholly outside the image)",
        f"clipped     {stats['clipped']:>8}  (reaching outside the image)",
        f"size        {stats['size_mismatch']:>8}  (images whose annotated size differs from the file's)",
    ]
    per_class = stats["per_class"]
    if per_class:
        width = max(len(name) for name in per_class)
        total = max(stats["boxes"], 1)
        lines.append("per class:")
        lines += [f"  {name:<{width}}  {n:>8}  {100 * n / total:5.1f}%" for name, n in per_class.items()]
    if stats["skipped_classes"]:
        skipped = ", ".join(f"{name}: {n}" for name, n in stats["skipped_classes"].items())
        lines.append(f"left out (classes not selected): {skipped}")
    if "bad_images" in stats:
        bad, decoded = stats["bad_images"], stats.get("images_decoded", True)
        how, fine = ("by decoding", "all decode whole") if decoded else ("for a cut-off end", "none cut off")
        lines.append(f"images checked {how}: {len(bad)} bad" + (":" if bad else f" ({fine})"))
        lines += [f"  {line}" for line in bad]
    return "\n".join(lines)
