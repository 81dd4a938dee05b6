"""The leaderboard: every row of one or more `detkd ablate` runs as a markdown table each.

    detkd ablate configs/bccd/distill_small.yaml --seeds 3 --rows recipe \
        --terms cwd,fgd,mgd,dkd,recipe_cwd,recipe_fgd,recipe_mgd,recipe_dkd --out runs/lb/small
    python tools/leaderboard.py runs/lb/small/ablation.json [runs/lb/lowres/ablation.json ...] \
        --out docs/LEADERBOARD.md --command "the commands above"

Per ablation (its ``ablation.json``): the teacher, the baseline, then the rows by their paired
AP50 gain, best first, with test AP50 and mAP (mean ± std over seeds), the paired gain and its
95 % Student-t interval, the paired mAP gain, the share of the teacher-baseline gap closed, the
training time per epoch against the baseline's, and the seeds done. The numbers are those of
``detkd ablate``'s Table 4 (:mod:`detkd.experiments.ablate`, :mod:`detkd.experiments.stats`);
this tool adds the time column and the order. A cell's epochs come from its run's resolved
``config.yaml``, else from the ablation's config file with its overrides and the row's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from detkd.config import load_any_config
from detkd.errors import DetkdError
from detkd.experiments.ablate import TABLE4_COLUMNS, Column, Record, config_label, markdown_table, table4_records
from detkd.utils.io import atomic_write

Summary = Mapping[str, Any]


def read_summary(path: str) -> dict[str, Any]:
    """An ``ablation.json``; an unreadable file or another JSON is one error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        raise DetkdError(f"{path}: not a readable ablation.json ({e})") from None
    missing = [k for k in ("config", "rows", "cells", "teacher", "splits") if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise DetkdError(f"{path}: not the ablation.json of detkd ablate (no {', '.join(missing)})")
    return summary


def cell_epochs(summary: Summary, cell: Mapping[str, Any]) -> int | None:
    """The epochs a cell trained: its run's ``config.yaml``, else the ablation's config with the
    common and the row's overrides; None when neither file is there."""
    resolved = os.path.join(cell["run_dir"], "config.yaml")
    if os.path.isfile(resolved):
        return load_any_config(resolved).train.epochs
    if os.path.isfile(summary["config"]):
        overrides = [*summary.get("overrides", []), *summary["rows"][cell["row"]].get("overrides", [])]
        return load_any_config(summary["config"], overrides).train.epochs
    return None


def epoch_seconds(summary: Summary) -> dict[str, float | None]:
    """Per row, the mean over its trained cells of training seconds per epoch (None: none known)."""
    per_row: dict[str, list[float]] = {}
    for cell in summary["cells"]:
        epochs = cell_epochs(summary, cell) if cell.get("train_seconds") else None
        if epochs:
            per_row.setdefault(cell["row"], []).append(cell["train_seconds"] / epochs)
    return {row: sum(per_row[row]) / len(per_row[row]) if row in per_row else None for row in summary["rows"]}


def time_cell(seconds: float | None, baseline: float | None) -> str:
    """``75 s (1.50x)``: seconds per epoch and the ratio to the baseline's."""
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" + (f" ({seconds / baseline:.2f}x)" if baseline else "")


def ranked(records: Sequence[Record]) -> list[Record]:
    """Teacher and baseline first, then the rows by paired AP50 gain, best first (none: last)."""
    head = [r for r in records if r["row"] in ("teacher", "baseline")]
    rest = [r for r in records if r["row"] not in ("teacher", "baseline")]
    rest.sort(key=lambda r: (r["paired_gain"] is None, -(r["paired_gain"] or 0.0)))
    return head + rest


def leaderboard_columns(times: Mapping[str, float | None]) -> tuple[Column, ...]:
    """Table 4's columns without the unpaired gain, with the time per epoch before the seeds."""
    kept = [c for c in TABLE4_COLUMNS if c[0] != "AP50 gain"]
    time: Column = ("train time / epoch (vs baseline)",
                    lambda r, s: time_cell(times.get(r["row"]), times.get("baseline")))
    return (*kept[:-1], time, kept[-1])


def leaderboard_markdown(summary: Summary) -> str:
    """One ablation's leaderboard: a heading, what the numbers are, the table."""
    every_row = {**summary, "table4": list(summary["rows"])}
    records = ranked(table4_records(every_row))
    head = (f"## {config_label(summary['config'])}: {summary['seeds']} paired seeds, split `{summary['splits']['test']}`\n\n"
            "AP50 (VOC all-point AP at IoU 0.5) and mAP (COCO AP@[.5:.95]) in %, mean ± std over seeds; paired gain: "
            "the mean over seeds of (row - baseline) at the same seed, in points, with its 95 % Student-t interval; "
            "gap closed: (row - baseline) / (teacher - baseline) on the mean AP50; training time per epoch, mean "
            "over the row's cells, and its ratio to the baseline's (cells run side by side share the cores).\n\n")
    return head + markdown_table(records, leaderboard_columns(epoch_seconds(summary)), summary) + "\n"


def leaderboard(paths: Sequence[str], command: str | None = None) -> str:
    """The markdown of every ablation in ``paths``, under one title and the command that made them."""
    text = "# Leaderboard\n\n"
    if command:
        text += f"Made by:\n\n```\n{command}\n```\n\n"
    return text + "\n".join(leaderboard_markdown(read_summary(p)) for p in paths)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ablations", nargs="+", metavar="ABLATION.json", help="ablation.json files of detkd ablate")
    parser.add_argument("--out", metavar="OUT.md", help="write the markdown here (default: print it)")
    parser.add_argument("--command", help="the commands that made the ablations (recorded in the file)")
    args = parser.parse_args(argv)
    try:
        text = leaderboard(args.ablations, args.command)
    except DetkdError as e:
        print(f"leaderboard: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        with atomic_write(args.out) as f:
            f.write(text)
        print(f"wrote {args.out}: {len(args.ablations)} table(s)")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
