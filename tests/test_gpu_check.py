"""tools/gpu_check.py where there is no GPU: it says so and exits 0; its --help lists every check."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}  # no GPU, even on a machine with one
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_without_cuda_it_says_so_and_exits_0() -> None:
    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: no CUDA GPU found") and "nothing checked" in done.stdout


def test_help_lists_every_check_and_an_unknown_one_is_refused() -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = list(module.checks(Path(".")))
    done = run("--help")
    assert done.returncode == 0
    listed = re.findall(r"^  (\w+)\s{2,}", done.stdout, flags=re.MULTILINE)
    assert listed == names and {"amp_train_small", "amp_distill_lowres", "cpu_cuda_forward", "bench_fp16",
                                "nccl_distill"} <= set(names)
    refused = run("--only", "amp_train_small,warp_drive")
    assert refused.returncode == 2 and "warp_drive" in refused.stderr
