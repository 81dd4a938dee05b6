"""The demo report's "starts from" column, read from each run's config.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detkd.experiments.report import starts_from

TEACHER = {"teacher": {"checkpoint": "/x/demo_teacher.pt"}}


@pytest.mark.parametrize(("config", "expected"), [
    ({**TEACHER, "student": {"init": "teacher"}, "model": {}}, "the teacher's weights (`demo_teacher.pt`)"),
    ({**TEACHER, "student": {"init": "inherit"}, "model": {}}, "the teacher's tensors that fit (`demo_teacher.pt`), the rest random"),
    ({**TEACHER, "student": {"init": "none"}, "model": {}}, "random weights"),
    ({"model": {"checkpoint": "/x/demo_teacher.pt", "checkpoint_matching": True}},
     "`demo_teacher.pt` (the tensors that fit, the rest random)"),
    ({"model": {"checkpoint": "/x/demo_teacher.pt", "checkpoint_matching": False}}, "`demo_teacher.pt`"),
    ({"model": {"weights": "DEFAULT"}}, "`DEFAULT`"),
], ids=["init-teacher", "init-inherit", "init-none", "baseline-of-inherit", "baseline-of-teacher", "pretrained"])
def test_each_way_a_run_starts_is_named(tmp_path: Path, config: dict, expected: str) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert starts_from(str(tmp_path)) == expected


def test_a_model_scored_not_trained_here_starts_nowhere(tmp_path: Path) -> None:
    assert starts_from(str(tmp_path)) == "-"
