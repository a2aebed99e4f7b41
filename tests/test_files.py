"""File output: the output directory is checked before a run and replaced without leftovers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from verify_compress import pipeline
from verify_compress.certificate import FORMAT
from verify_compress.errors import OutputError, VerifyCompressError
from verify_compress.files import (
    CERTIFICATE_FORMAT,
    is_previous_output,
    prepare_output,
    replace_directory,
)

Replace = Callable[[Path, Path], None]


def previous_output(folder: Path) -> Path:
    """A folder as a run leaves it (the files that matter here)."""
    (folder / "smt").mkdir(parents=True)
    (folder / "smt" / "q.smt2").write_text("(check-sat)\n")
    (folder / "certificate.json").write_text(json.dumps({"format": FORMAT, "x": 1}))
    return folder


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# prepare_output


def test_the_certificate_format_recognised_is_the_one_certificates_are_written_with() -> None:
    assert CERTIFICATE_FORMAT == FORMAT


def test_a_missing_out_folder_is_accepted_and_nothing_is_created(tmp_path: Path) -> None:
    prepare_output(tmp_path / "out", force=False)
    prepare_output(tmp_path / "new" / "deeper" / "out", force=False)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_out_folder_and_a_previous_output_are_accepted_without_force(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty").mkdir()
    prepare_output(tmp_path / "empty", force=False)
    previous = previous_output(tmp_path / "previous")
    assert is_previous_output(previous)
    prepare_output(previous, force=False)
    assert sorted(p.name for p in previous.iterdir()) == ["certificate.json", "smt"]


def test_an_out_path_that_is_a_file_is_refused_without_force(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputError, match=f"^{notes}: exists and is not a directory"):
        prepare_output(notes, force=False)
    prepare_output(notes, force=True)
    assert notes.read_text() == "mine"


@pytest.mark.parametrize(
    "certificate",
    [None, "{not json", json.dumps({"format": "something-else"}), json.dumps([1])],
    ids=["no certificate", "not JSON", "another format", "not an object"],
)
def test_an_out_folder_with_user_files_is_refused_without_force(
    tmp_path: Path, certificate: str | None
) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("mine")
    if certificate is not None:
        (folder / "certificate.json").write_text(certificate)
    with pytest.raises(OutputError, match=f"^{folder}: the folder holds files") as caught:
        prepare_output(folder, force=False)
    assert "--force" in str(caught.value)
    assert isinstance(caught.value, VerifyCompressError)
    prepare_output(folder, force=True)
    assert (folder / "chapter1.tex").read_text() == "mine"


def test_an_out_under_a_file_is_refused_even_with_force_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "out"
    with pytest.raises(OutputError, match=f"^{out}: cannot be created: .*notes.txt is not a dir"):
        prepare_output(out, force=True)


def test_an_unwritable_out_is_refused_up_front_naming_the_users_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unwritable(*args: Any, dir: str | Path, **kwargs: Any) -> tuple[int, str]:
        probe = os.path.join(dir, ".verify-compress-probe-x1y2")
        raise PermissionError(13, "Permission denied", probe)

    monkeypatch.setattr(tempfile, "mkstemp", unwritable)
    out = tmp_path / "out"
    with pytest.raises(OutputError) as caught:
        prepare_output(out, force=False)
    message = str(caught.value)
    assert message.startswith(f"{out}: the output cannot be written there (permission denied")
    assert "probe" not in message
    (tmp_path / "previous").mkdir()
    with pytest.raises(OutputError, match=f"^{tmp_path / 'previous'}: the output cannot be"):
        prepare_output(tmp_path / "previous", force=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_parent_folder_is_refused_up_front(tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=f"^{parent / 'out'}: the output cannot be written"):
            prepare_output(parent / "out", force=True)
    finally:
        parent.chmod(0o755)


# ---------------------------------------------------------------------------------------------
# replace_directory (also as the pipeline calls it)


@pytest.fixture(params=["files", "pipeline"])
def replace(request: pytest.FixtureRequest) -> Replace:
    function: Replace = (
        replace_directory if request.param == "files" else pipeline._replace_directory
    )
    return function


def staged(tmp_path: Path) -> Path:
    staging = tmp_path / ".out.tmp-1"
    staging.mkdir()
    (staging / "certificate.json").write_text("new")
    return staging


def test_a_new_output_is_moved_into_place(tmp_path: Path, replace: Replace) -> None:
    replace(staged(tmp_path), tmp_path / "out")
    assert (tmp_path / "out" / "certificate.json").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_a_previous_output_or_a_file_is_replaced_leaving_no_old_folder(
    tmp_path: Path, replace: Replace
) -> None:
    previous_output(tmp_path / "out")
    replace(staged(tmp_path), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["certificate.json"]
    (tmp_path / "file").write_text("mine")
    replace(staged(tmp_path), tmp_path / "file")
    assert (tmp_path / "file" / "certificate.json").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_removing_the_old_output_interrupted_midway_leaves_no_old_folder(
    tmp_path: Path, replace: Replace, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous_output(tmp_path / "out")
    real_rmtree = shutil.rmtree
    calls: list[str] = []

    def interrupted_once(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(str(path))
        if len(calls) == 1:  # remove part of it, then Ctrl-C
            next(Path(path).rglob("*.smt2")).unlink()
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        replace(staged(tmp_path), tmp_path / "out")
    assert (tmp_path / "out" / "certificate.json").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_an_old_output_that_cannot_be_moved_aside_stays_and_no_old_folder_is_left(
    tmp_path: Path, replace: Replace, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous_output(tmp_path / "out")
    staging = staged(tmp_path)
    real_replace = os.replace

    def refuse_moving_the_old_output(source: Any, destination: Any) -> None:
        if Path(source) == tmp_path / "out":
            raise PermissionError(13, "Permission denied", str(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", refuse_moving_the_old_output)
    with pytest.raises(PermissionError):
        replace(staging, tmp_path / "out")
    assert is_previous_output(tmp_path / "out")
    assert leftovers(tmp_path) == [staging.name]  # the caller removes its staging folder


def test_when_the_new_output_cannot_be_moved_in_the_old_one_is_put_back(
    tmp_path: Path, replace: Replace, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous_output(tmp_path / "out")
    staging = staged(tmp_path)
    real_replace = os.replace

    def refuse_the_staging_folder(source: Any, destination: Any) -> None:
        if Path(source) == staging:
            raise OSError(28, "No space left on device", str(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", refuse_the_staging_folder)
    with pytest.raises(OSError, match="No space left"):
        replace(staging, tmp_path / "out")
    assert is_previous_output(tmp_path / "out")
    assert (tmp_path / "out" / "smt" / "q.smt2").is_file()
    assert leftovers(tmp_path) == [staging.name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root removes read-only folders anyway")
def test_an_old_output_with_a_read_only_subfolder_is_removed(
    tmp_path: Path, replace: Replace
) -> None:
    previous_output(tmp_path / "out")
    (tmp_path / "out" / "smt").chmod(0o555)
    replace(staged(tmp_path), tmp_path / "out")
    assert leftovers(tmp_path) == []
