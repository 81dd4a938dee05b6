"""Atomic writes: the user's permissions, and a full disk named in one line with the old file kept."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from detkd.errors import DetkdError
from detkd.utils.io import atomic_write


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_atomic_files_get_the_mode_of_any_file_the_user_creates(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "atomic.txt") as f:
            f.write("x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    modes = [stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("atomic.txt", "plain.txt")]
    assert modes[0] == modes[1] == 0o666 & ~umask


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4352 vs 4240"),
                                   OSError(errno.ENOSPC, "No space left on device")], ids=["torch.save", "ENOSPC"])
def test_a_full_disk_is_named_and_the_previous_file_kept(tmp_path: Path, error: Exception) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"previous")
    with pytest.raises(DetkdError, match=rf"^no space left on device: {path} \(the previous file"):
        with atomic_write(path, "wb") as f:
            f.write(b"partial")
            raise error
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_other_errors_pass_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="something else"):
        with atomic_write(tmp_path / "x.txt") as f:
            raise RuntimeError("something else")
