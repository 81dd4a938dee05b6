"""Jobs that share cores do not spin against each other: OpenMP threads wait passively under the
CLI, data workers run OpenCV on one thread, and train.threads sets torch's threads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

from detkd.config import Config
from detkd.engine.data import one_opencv_thread
from detkd.engine.trainer import train


def test_the_command_line_makes_waiting_threads_sleep_unless_told_otherwise() -> None:
    code = "import os, detkd.cli; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ACTIVE"  # the user's choice stays


def opencv_threads(_: int) -> int:
    return cv2.getNumThreads()


def test_data_workers_run_opencv_on_one_thread_set_before_they_fork() -> None:
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        one_opencv_thread(0)
        assert cv2.getNumThreads() == 4  # no workers: the main process keeps its pool
        one_opencv_thread(1)
        loader = torch.utils.data.DataLoader(range(2), num_workers=1, collate_fn=lambda b: [opencv_threads(i) for i in b])
        assert [n for batch in loader for n in batch] == [1, 1]
    finally:
        cv2.setNumThreads(before)


def test_train_threads_sets_torchs_threads(synth_root: Path, make_config: Callable[..., Config]) -> None:
    threads = torch.get_num_threads()
    seen = []
    try:
        cfg = make_config(synth_root, "data.limit=2", "train.batch_size=2", "train.epochs=1", "train.eval_every=0",
                          "model.min_size=64", "model.max_size=80", "train.threads=2")
        train(cfg, hooks=[lambda trainer: seen.append(torch.get_num_threads())])
    finally:
        torch.set_num_threads(threads)
    assert seen == [2]


def test_throughput_is_the_median_of_a_window_so_a_stall_does_not_move_it() -> None:
    from detkd.engine.trainer import Window

    window = Window()
    for _ in range(20):
        window.add({"loss": 1.0}, images=4, seconds=0.5)
    steady = window.img_per_s()
    window.add({"loss": 1.0}, images=4, seconds=30.0)  # one stalled iteration
    assert steady == 8.0 and window.img_per_s() == 8.0 and window.seconds_per_iter() == 0.5
