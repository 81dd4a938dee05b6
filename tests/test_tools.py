"""The scripts of tools/: one clear line for a bad input, the numbers carried over as they are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def results_json(ablation: Path, out: Path, recipe: str = "recipe") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / "results_json.py"), str(ablation), str(out), "--recipe", recipe],
                          capture_output=True, text=True)


def scores(ap50: float, map_: float) -> dict:
    return {"ap50": {"test": ap50}, "map": {"test": map_}}


def test_results_json_carries_the_scores_in_percent(tmp_path: Path) -> None:
    summary = {"config": "configs/x.yaml", "splits": {"test": "test"}, "overrides": ["seed=1"],
               "teacher": {"checkpoint": "t.pt", **scores(0.7, 0.4)},
               "cells": [{"row": "baseline", "seed": 0, **scores(0.5, 0.3)}, {"row": "recipe", "seed": 0, **scores(0.55, 0.31)}],
               "rows": {"baseline": {}, "recipe": {"description": "d", "overrides": ["distill.hint.enabled=false"]}}}
    (tmp_path / "ablation.json").write_text(json.dumps(summary))
    proc = results_json(tmp_path / "ablation.json", tmp_path / "out.json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["teacher"] == {"checkpoint": "t.pt", "ap50": 70.0, "map": 40.0}
    assert out["baseline"] == {"0": {"ap50": 50.0, "map": 30.0}}
    assert out["rows"]["recipe"]["seeds"] == {"0": {"ap50": 55.0, "map": 31.0}}
    assert out["rows"]["recipe"]["overrides"] == {"distill.hint.enabled": "false"}


@pytest.mark.parametrize(("content", "problem"), [
    (None, "not found (give the ablation.json that detkd ablate wrote)"),
    ('{"rows": ', "not a readable JSON file (Expecting value"),
    ("{}", "not an ablation.json of detkd ablate (it lacks config, splits, teacher, cells, rows)"),
    ('{"config": 1, "splits": {}, "teacher": {}, "cells": [], "rows": {"recipe": {}}}',
     "not an ablation.json of detkd ablate (KeyError: 'description')"),
], ids=["missing", "garbled", "empty", "foreign"])
def test_results_json_refuses_a_bad_ablation_in_one_line(tmp_path: Path, content: str | None, problem: str) -> None:
    ablation = tmp_path / "ablation.json"
    if content is not None:
        ablation.write_text(content)
    proc = results_json(ablation, tmp_path / "out.json")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(f"{ablation}: {problem}") and not (tmp_path / "out.json").exists()
