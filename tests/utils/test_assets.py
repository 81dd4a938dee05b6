"""The bundled teacher's checksum, checked by the checkpoint reader wherever the file is read: the
package's own asset by any path, a copy of its folder, and no other file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detkd.errors import DetkdError
from detkd.utils import assets
from detkd.utils.checkpoint import read_checkpoint


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package's asset folder (weights and sidecar)."""
    folder = tmp_path / "assets"
    folder.mkdir()
    for name in (assets.TEACHER_FILE, assets.SIDECAR_FILE):
        shutil.copy(assets.ASSET_DIR / name, folder / name)
    return folder


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_package_asset_is_found_by_any_path(tmp_path: Path) -> None:
    link = tmp_path / "teacher.pt"
    link.symlink_to(assets.ASSET_DIR / assets.TEACHER_FILE)
    assert assets.bundled_folder(link) == assets.ASSET_DIR
    assert assets.bundled_folder(assets.ASSET_DIR / ".." / "assets" / assets.TEACHER_FILE) == assets.ASSET_DIR
    assert assets.verified_sidecar(assets.ASSET_DIR)["file"] == assets.TEACHER_FILE


def test_a_damaged_copy_of_the_asset_folder_is_refused_by_the_reader(copy: Path) -> None:
    weights = copy / assets.TEACHER_FILE
    assert read_checkpoint(weights).classes  # the intact copy reads
    flip_a_byte(weights)
    with pytest.raises(DetkdError, match=rf"^{weights}: SHA-256 .* the file is damaged or was replaced; rebuild"):
        read_checkpoint(weights)


def test_a_copy_with_a_broken_sidecar_is_refused_naming_the_sidecar(copy: Path) -> None:
    sidecar = copy / assets.SIDECAR_FILE
    sidecar.write_text(json.dumps({"file": assets.TEACHER_FILE}))
    with pytest.raises(DetkdError, match=rf"^{sidecar}: the sidecar lacks sha256, config"):
        read_checkpoint(copy / assets.TEACHER_FILE)


def test_other_files_are_not_checked(copy: Path, tmp_path: Path) -> None:
    flip_a_byte(copy / assets.TEACHER_FILE)
    renamed = tmp_path / "teacher_copy.pt"
    shutil.copy(copy / assets.TEACHER_FILE, renamed)
    alone = tmp_path / "alone" / assets.TEACHER_FILE  # the name, without a sidecar beside it
    alone.parent.mkdir()
    shutil.copy(copy / assets.TEACHER_FILE, alone)
    for path in (renamed, alone):
        assert assets.bundled_folder(path) is None
        assets.check_if_bundled(path)


def test_the_weights_are_hashed_once_per_process_until_they_change(copy: Path, monkeypatch) -> None:
    hashed, sha256_of = [], assets.sha256_of
    monkeypatch.setattr(assets, "sha256_of", lambda path: hashed.append(path) or sha256_of(path))
    weights = copy / assets.TEACHER_FILE
    for _ in range(3):  # a demo reads the teacher to score, distil (twice), time and diagnose it
        read_checkpoint(weights)
    assert len(hashed) == 1
    flip_a_byte(weights)
    with pytest.raises(DetkdError, match="damaged or was replaced"):
        read_checkpoint(weights)
    assert len(hashed) == 2
