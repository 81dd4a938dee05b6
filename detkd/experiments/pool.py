"""Cells side by side: a few worker processes, each with its share of the CPU threads.

Small detectors trained with batches of a few images use two cores poorly: on the 2-core
machines detkd is built on, two trainings at one thread each finish sooner than the same two one
after the other at two threads. :func:`run_cells` hands the cells out longest first (the caller's
order) to ``jobs`` processes started with ``spawn`` (no copy of the parent's OpenMP or loader
state); each process writes its log and progress to ``<run_dir>/log.txt`` so that two trainings
do not interleave on the terminal. A cell's result (or its error) comes back to the parent; a
killed pool leaves each cell resumable like any other (:mod:`detkd.experiments.runner`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch

from detkd.errors import DetkdError
from detkd.experiments.runner import Cell, CellResult, run_cell

log = logging.getLogger("detkd")

LOG_FILE = "log.txt"
HEARTBEAT_S = 30.0  # how often the parent says where the running cells are


def check_jobs(jobs: int) -> int:
    """``jobs`` itself, or a :class:`DetkdError` naming ``--jobs`` when it is under 1."""
    if jobs < 1:
        raise DetkdError(f"--jobs {jobs}: give 1 or more")
    return jobs


def default_jobs(cells: int) -> int:
    """Two processes where there are at least two cores and two cells, else one."""
    return 2 if (os.cpu_count() or 1) >= 2 and cells >= 2 else 1


def threads_per_job(jobs: int) -> int:
    """torch's threads shared out: ``max(1, threads // jobs)``."""
    return max(1, torch.get_num_threads() // max(1, jobs))


def run_cells(cells: Sequence[tuple[Cell, str]], jobs: int,
              on_done: Callable[[CellResult], None] | None = None) -> dict[str, CellResult]:
    """Run ``(cell, run_dir)`` pairs ``jobs`` at a time (in this order: longest first balances the
    workers); ``on_done`` is called in the parent as each one ends. -> ``{cell name: result}``.
    The first error stops the pool (cells not started are cancelled) and is raised here."""
    threads, results, start = threads_per_job(jobs), {}, time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending: dict[Future, tuple[Cell, str]] = {}
        for cell, run_dir in cells:
            pending[pool.submit(run_logged, cell, run_dir, threads)] = (cell, run_dir)
            log.info("%s: queued (log: %s)", cell.name, os.path.join(run_dir, LOG_FILE))
        while pending:
            done, _ = wait(pending, timeout=HEARTBEAT_S, return_when=FIRST_COMPLETED)
            if not done:
                log.info("running: %s", "; ".join(f"{c.name}: {last_line(d)}" for c, d in pending.values()
                                                  if started_since(d, start)))
            for future in done:
                (cell, _), error = pending.pop(future), future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    if isinstance(error, BrokenProcessPool):  # killed: out of memory, a signal
                        raise DetkdError(f"{cell.name}: its worker process died ({error}); start the same "
                                         "command again to resume, or with --jobs 1") from error
                    raise error
                results[cell.name] = future.result()
                if on_done is not None:
                    on_done(results[cell.name])
    return results


def started_since(run_dir: str, since: float) -> bool:
    """Whether a worker has begun the cell in ``run_dir`` since ``since`` (its log was written:
    a queued cell's log is absent or older)."""
    try:
        return os.path.getmtime(os.path.join(run_dir, LOG_FILE)) >= since
    except OSError:
        return False


def last_line(run_dir: str, width: int = 72) -> str:
    """The last line of a cell's log (its latest progress), at most ``width`` characters; only
    the log's last 4 KiB are read."""
    try:
        with open(os.path.join(run_dir, LOG_FILE), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "starting"
    return (lines[-1] if lines else "starting")[:width]


def run_logged(cell: Cell, run_dir: str, threads: int) -> CellResult:
    """In a worker: :func:`run_cell` with ``threads`` torch threads, its log (and anything printed)
    appended to ``<run_dir>/log.txt``."""
    torch.set_num_threads(threads)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, LOG_FILE), "a", encoding="utf-8") as out:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(out.fileno(), sys.stdout.fileno())
        os.dup2(out.fileno(), sys.stderr.fileno())
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        log.info("%s: started in worker process %d with %d thread(s)", cell.name, os.getpid(), threads)
        return run_cell(cell, run_dir)
