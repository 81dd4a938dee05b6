"""Cells in worker processes: results and errors come back to the parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkd.errors import DetkdError
from detkd.experiments.pool import (
    LOG_FILE,
    last_line,
    run_cells,
    started_since,
    threads_per_job,
)
from detkd.experiments.runner import Cell

REPO = Path(__file__).resolve().parents[2]


def test_an_error_in_a_worker_is_raised_in_the_parent_with_its_message(tmp_path: Path) -> None:
    config = str(REPO / "configs" / "synth" / "student_small.yaml")
    cells = [(Cell(f"c{i}", config, checkpoint=str(tmp_path / f"missing{i}.pt")), str(tmp_path / f"c{i}"))
             for i in range(2)]
    with pytest.raises(DetkdError, match=r"missing\d\.pt: checkpoint of c\d not found"):
        run_cells(cells, jobs=2)
    assert (tmp_path / "c0" / LOG_FILE).exists()  # the worker wrote where the cell runs


def test_threads_are_shared_among_the_jobs() -> None:
    import torch

    assert threads_per_job(1) == torch.get_num_threads()
    assert threads_per_job(10 * torch.get_num_threads()) == 1


def test_the_heartbeat_shows_each_running_cells_latest_log_line(tmp_path: Path) -> None:
    assert last_line(str(tmp_path)) == "starting"  # no log yet
    (tmp_path / LOG_FILE).write_text("training on 288 images\nepoch 2 iter 40/72: loss 1.2 eta 00:31\n\n")
    assert last_line(str(tmp_path)) == "epoch 2 iter 40/72: loss 1.2 eta 00:31"
    assert len(last_line(str(tmp_path), width=7)) == 7
    written = (tmp_path / LOG_FILE).stat().st_mtime
    assert started_since(str(tmp_path), written) and not started_since(str(tmp_path), written + 60)
    assert not started_since(str(tmp_path / "queued"), 0.0)  # no log: not started
