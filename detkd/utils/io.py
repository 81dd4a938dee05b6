"""Files written so that a process killed at any moment leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from detkd.errors import DetkdError

# torch.save's zip writer reports a failed write (a full disk) as a RuntimeError with one of these
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. The file gets the permissions of any file the
    user creates (``0666`` less the umask). On any error the temporary file is removed and
    ``path`` is left as it was; a full disk is a :class:`DetkdError` saying so, naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide the file from the user's group
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if disk_full(e):
            raise DetkdError(f"no space left on device: {path} (the previous file, if any, is kept)") from None
        raise
    fsync_dir(folder)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full: ``ENOSPC``/``EDQUOT``, or
    torch.save's RuntimeError for a write that stopped short."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return isinstance(error, RuntimeError) and any(text in str(error) for text in TORCH_WRITE_FAILURES)


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
