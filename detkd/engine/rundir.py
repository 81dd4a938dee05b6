"""A run folder owned by one training process: locked, checked before anything is written.

- :func:`run_lock`: ``RUN_DIR/.detkd.lock`` holds the owner's pid and host. A second ``detkd
  train`` on the folder is refused while that process lives; a lock left by a dead process
  (killed, crashed) is stale and taken over.
- :func:`check_run_dir`: a folder that holds a run (its ``last.pt``, ``config.yaml``,
  ``metrics.jsonl``, ...) is refused without ``--resume`` (continue it) or ``--overwrite``
  (replace it); nothing is written before this check and the resume checks have passed.
- :func:`remove_stale_temporaries`: the ``.NAME.*.tmp`` files that a killed
  :func:`~detkd.utils.io.atomic_write` left (a checkpoint write is 50-200 MB) are removed at
  start, once the lock guarantees that no live writer owns them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator

from detkd.errors import DetkdError

log = logging.getLogger("detkd")

LOCK_FILE = ".detkd.lock"
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "results.json")
TEMPORARY = re.compile(r"^\..+\.[^.]+\.tmp$")  # atomic_write's mkstemp(prefix=".NAME.", suffix=".tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 delivers nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: str) -> tuple[int, str, float] | None:
    """``(pid, host, start time)`` of a lock file, or None when it is unreadable (half written)."""
    try:
        with open(path, encoding="utf-8") as f:
            pid, host, started = f.read().split()
        return int(pid), host, float(started)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_lock(run_dir: str) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (see the module docstring)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILE)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = read_lock(path)
            if owner and owner[1] == socket.gethostname() and pid_alive(owner[0]) and owner[0] != os.getpid():
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner[2]))
                raise DetkdError(f"{run_dir}: in use by a running detkd process (pid {owner[0]}, since {since}); "
                                 "wait for it to end, or choose another output_dir=...") from None
            log.info("%s: removing the stale lock of a process that is gone (%s)", run_dir,
                     f"pid {owner[0]}" if owner else "unreadable")
            os.unlink(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n")
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if (read_lock(path) or (None,))[0] == os.getpid():
                os.unlink(path)


def run_files(run_dir: str) -> list[str]:
    """The files of a run that ``run_dir`` holds."""
    return [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]


def check_run_dir(run_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an earlier one (see the module docstring); with
    ``overwrite``, remove the earlier run's files. Writes nothing otherwise."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise DetkdError(f"{run_dir}: output_dir is a file, not a folder")
    found = run_files(run_dir) if os.path.isdir(run_dir) else []
    if resume and overwrite:
        raise DetkdError("--resume and --overwrite: give one (continue the run, or replace it)")
    if not found or (resume and "last.pt" in found):
        return
    if overwrite:
        for name in found:
            os.unlink(os.path.join(run_dir, name))
        log.info("%s: --overwrite: removed the earlier run's %s", run_dir, ", ".join(found))
        return
    if resume:  # killed before its first checkpoint: nothing to continue, its files are replaced
        log.info("--resume: %s has no last.pt (a run stopped before its first checkpoint): starting a new run "
                 "in its place", run_dir)
        for name in found:
            os.unlink(os.path.join(run_dir, name))
        return
    raise DetkdError(f"{run_dir}: already holds a run ({', '.join(found)}); pass --resume to continue it, "
                     "--overwrite to replace it, or choose another output_dir=...")


def remove_stale_temporaries(run_dir: str) -> list[str]:
    """Delete the temporary files killed atomic writes left in ``run_dir`` (call under the lock)."""
    if not os.path.isdir(run_dir):
        return []
    stale = [name for name in os.listdir(run_dir) if TEMPORARY.match(name)]
    for name in stale:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(run_dir, name))
    if stale:
        log.info("%s: removed %d temporary file(s) of interrupted writes (%s)", run_dir, len(stale), ", ".join(stale))
    return stale
