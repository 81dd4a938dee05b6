"""The per-seed numbers of a `detkd ablate` run as a small, committed JSON (docs/results/).

    python tools/results_json.py runs/final/bccd_lowres/ablation.json docs/results/bccd_lowres.json \
        --recipe recipe --command "detkd ablate configs/bccd/distill_lowres.yaml ..."

Writes ``{"split", "teacher": {"ap50", "map"}, "baseline": {SEED: {"ap50", "map"}}, "rows": {ROW:
{"overrides": {KEY: VALUE}, "seeds": {SEED: {"ap50", "map"}}}}, "recipe": ROW, ...}`` with AP in
percent (VOC all-point AP50, COCO AP@[.5:.95]) on the ablation's test split, so that anyone can
recompute the paired means and intervals without training anything (``paired`` holds ours).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


SUMMARY_KEYS = ("config", "splits", "teacher", "cells", "rows")  # what convert reads


def percent(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 2)


def scores(cell: dict[str, Any], split: str = "test") -> dict[str, float | None]:
    return {"ap50": percent(cell["ap50"][split]), "map": percent(cell["map"][split])}


def overrides_dict(overrides: list[str]) -> dict[str, str]:
    return dict(text.split("=", 1) for text in overrides)


def convert(summary: dict[str, Any], recipe: str, command: str | None) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, row in summary["rows"].items():
        if name == "baseline" or not row.get("available", True):
            continue
        paired = row.get("paired", {})
        rows[name] = {
            "description": row["description"],
            "overrides": overrides_dict(row.get("overrides", [])),
            "seeds": {str(c["seed"]): scores(c) for c in summary["cells"] if c["row"] == name},
            "paired": {key: {k: percent(v) if k != "n" else v for k, v in paired[key]["test"].items()}
                       for key in ("ap50", "map") if key in paired},
        }
    if recipe not in rows:
        raise SystemExit(f"--recipe {recipe}: not a row of this ablation ({', '.join(rows)})")
    return {
        "split": summary["splits"]["test"],
        "config": summary["config"],
        "common_overrides": overrides_dict(summary.get("overrides", [])),
        "command": command,
        "teacher": {"checkpoint": summary["teacher"]["checkpoint"], **scores(summary["teacher"])},
        "baseline": {str(c["seed"]): scores(c) for c in summary["cells"] if c["row"] == "baseline"},
        "rows": rows,
        "recipe": recipe,
    }


def read_summary(path: str) -> dict[str, Any]:
    """The ablation.json at ``path``; a missing, unreadable or foreign file ends the script with one line."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path}: not found (give the ablation.json that detkd ablate wrote)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"{path}: not a readable JSON file ({e})") from None
    missing = [k for k in SUMMARY_KEYS if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise SystemExit(f"{path}: not an ablation.json of detkd ablate (it lacks {', '.join(missing)})")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ablation", help="the ablation.json that detkd ablate wrote")
    parser.add_argument("out", help="the JSON to write (docs/results/NAME.json)")
    parser.add_argument("--recipe", required=True, help="the row the headline quotes")
    parser.add_argument("--command", help="the command that made the ablation (recorded)")
    args = parser.parse_args()
    summary = read_summary(args.ablation)
    try:
        out = convert(summary, args.recipe, args.command)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise SystemExit(f"{args.ablation}: not an ablation.json of detkd ablate ({type(e).__name__}: {e})") from None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(out['baseline'])} baseline seeds, rows {', '.join(out['rows'])}")


if __name__ == "__main__":
    main()
