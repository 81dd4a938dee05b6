"""The run folder is owned and never lost: a lock, refused overwrites, checks before any write,
resumes that honour or refuse a changed config, no NaN checkpoint, no stale temporaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from detkd.cli import main
from detkd.config import Config, save_config
from detkd.engine.rundir import LOCK_FILE
from detkd.engine.trainer import train
from detkd.errors import DetkdError

FAST = ("data.limit=4", "train.batch_size=2", "train.epochs=1", "train.eval_every=0", "model.min_size=96",
        "model.max_size=120", "train.log_every=1")


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_a_locked_folder_is_refused_and_a_stale_lock_is_taken_over(synth_root: Path, make_config: Callable[..., Config],
                                                                   tmp_path: Path) -> None:
    cfg = make_config(synth_root, *FAST)
    run = Path(cfg.output_dir)
    run.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_FILE).write_text(f"{alive.pid} {os.uname().nodename} 0\n")
        with pytest.raises(DetkdError, match=f"in use by a running detkd process \\(pid {alive.pid}"):
            train(cfg)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        alive.kill()
        alive.wait()
    (run / LOCK_FILE).write_text(f"{alive.pid} {os.uname().nodename} 0\n")  # its process is gone now
    train(cfg)
    assert (run / "last.pt").is_file() and not (run / LOCK_FILE).exists()  # released at the end


def test_an_earlier_run_needs_resume_or_overwrite_and_is_never_appended_to(synth_root: Path, tmp_path: Path,
                                                                          make_config: Callable[..., Config],
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cfg.yaml"
    save_config(make_config(synth_root, *FAST), config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 12}) + "\n")  # a run killed early
    (run / "config.yaml").write_text("# the killed run's\n")
    assert main(["train", str(config)]) == 2
    assert "already holds a run (config.yaml, metrics.jsonl); pass --resume" in error_of(capsys)
    assert (run / "config.yaml").read_text() == "# the killed run's\n"  # untouched by the refusal
    assert main(["train", str(config), "--resume"]) == 0  # nothing to continue: a new run in its place
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] == 1 and 12 not in steps
    before = (run / "last.pt").stat().st_mtime_ns
    assert main(["train", str(config)]) == 2 and "--overwrite" in error_of(capsys)
    assert (run / "last.pt").stat().st_mtime_ns == before
    assert main(["train", str(config), "--overwrite"]) == 0
    assert (run / "last.pt").stat().st_mtime_ns != before


def test_resume_applies_what_it_can_and_refuses_the_rest_before_writing(synth_root: Path, tmp_path: Path,
                                                                        make_config: Callable[..., Config],
                                                                        capsys: pytest.CaptureFixture[str],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "cfg.yaml"
    save_config(make_config(synth_root, *FAST), config)
    run = tmp_path / "run"
    assert main(["train", str(config)]) == 0
    saved = (run / "config.yaml").read_text()
    for change in ("train.lr=0.5", "train.batch_size=1"):
        assert main(["train", str(config), "--resume", change]) == 2
        err = error_of(capsys)
        assert f"--resume cannot honour a changed {change.split('=')[0]}" in err and "in the checkpoint" in err
        assert (run / "config.yaml").read_text() == saved  # a refused resume writes nothing
    caplog.set_level("INFO", logger="detkd")
    assert main(["train", str(config), "--resume", "train.epochs=2"]) == 0  # train longer: applied
    assert "train.epochs changed (1 -> 2), applied" in caplog.text
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_non_finite_weights_are_never_saved(synth_root: Path, make_config: Callable[..., Config], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # the last step of the run breaks the weights: its loss was finite, the weights after it are not
    config = tmp_path / "cfg.yaml"
    save_config(make_config(synth_root, "data.limit=4", "train.batch_size=2", "train.epochs=1", "train.eval_every=0",
                            "train.lr=1e6", "train.warmup_iters=0", "train.clip_grad_norm=null"), config)
    assert main(["train", str(config)]) == 2
    err = error_of(capsys)
    assert err.startswith("detkd: error: non-finite weights after iteration 2 (epoch 1)") and "not saved" in err
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_a_metric_typo_is_refused_before_the_first_step(synth_root: Path, make_config: Callable[..., Config],
                                                        tmp_path: Path) -> None:
    cfg = make_config(synth_root, *FAST, "train.metric=voc.MAP")
    with pytest.raises(DetkdError, match="did you mean 'voc.mAP'"):
        train(cfg)
    assert not Path(cfg.output_dir).exists() or not any(p.name != LOCK_FILE for p in Path(cfg.output_dir).iterdir())


def test_stale_temporaries_of_killed_writes_are_removed(synth_root: Path, make_config: Callable[..., Config]) -> None:
    cfg = make_config(synth_root, *FAST)
    run = Path(cfg.output_dir)
    run.mkdir()
    for name in (".last.pt.k3j9x_1.tmp", ".config.yaml.abc.tmp"):
        (run / name).write_bytes(b"\0" * 1000)
    (run / "notes.tmp").write_text("mine")  # not one of atomic_write's
    train(cfg)
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == ["notes.tmp"]


def test_last_pt_is_written_before_the_evaluation(synth_root: Path, make_config: Callable[..., Config],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from detkd.engine import trainer as T

    cfg = make_config(synth_root, *FAST[:-2], "train.eval_every=1")

    def broken(self):
        assert Path(self.last_path).is_file(), "evaluated before last.pt was written"
        raise DetkdError("the evaluation failed")

    monkeypatch.setattr(T.Trainer, "evaluate", broken)
    with pytest.raises(DetkdError, match="the evaluation failed"):
        train(cfg)
    assert torch.load(Path(cfg.output_dir) / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("failure", ["torch.save", "ENOSPC"])
def test_a_full_disk_at_the_second_checkpoint_is_one_line_and_keeps_the_first(
        synth_root: Path, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cli_error, failure: str) -> None:
    """torch.save's zip writer on a full disk: RuntimeError "[enforce fail ...] unexpected pos"; a
    plain write: ENOSPC. Either is "no space left on device: <last.pt>"; the first last.pt stays."""
    import errno

    config = tmp_path / "cfg.yaml"
    save_config(make_config(synth_root, *FAST, "train.epochs=2"), config)
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4352 vs 4240")

    monkeypatch.setattr(torch, "save", save)
    last = tmp_path / "run" / "last.pt"
    assert cli_error("train", config) == (f"detkd: error: no space left on device: {last} (the previous file, if "
                                          "any, is kept)")
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]


def test_resume_of_a_last_pt_without_its_training_state_is_one_line(synth_root: Path, tmp_path: Path, cli_error,
                                                                      make_config: Callable[..., Config]) -> None:
    config = tmp_path / "cfg.yaml"
    save_config(make_config(synth_root, *FAST), config)
    assert main(["train", str(config)]) == 0
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["scheduler"]
    torch.save(state, last)
    assert cli_error("train", config, "--resume", "train.epochs=2") == (
        f"detkd: error: {last}: cannot be resumed: it lacks scheduler (not a last.pt written by detkd train or detkd "
        "distill); start a new run with --overwrite, or from its weights with model.checkpoint")


def test_resume_after_a_partial_metrics_line_drops_it_and_says_so(synth_root: Path, tmp_path: Path,
                                                                  make_config: Callable[..., Config],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A writer killed mid-line leaves a partial last line in metrics.jsonl; --resume goes on without it."""
    config = tmp_path / "cfg.yaml"
    save_config(make_config(synth_root, *FAST), config)
    assert main(["train", str(config)]) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    whole = metrics.read_text().splitlines()
    with open(metrics, "a") as f:
        f.write('{"type": "train", "step": 3, "lo')
    caplog.set_level("INFO", logger="detkd")
    assert main(["train", str(config), "--resume", "train.epochs=2"]) == 0
    assert f"{metrics}: dropped 1 line(s) that are not a whole JSON record (line {len(whole) + 1};" in caplog.text
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [json.dumps(r) for r in records[: len(whole)]] == whole and len(records) > len(whole)
    assert [r["epoch"] for r in records if r["type"] == "train"][-1] == 1  # the second epoch (0-based) logged
