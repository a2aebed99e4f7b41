"""File output: atomic writes, and the output directory made safe to write and replace.

- `atomic_write_bytes`/`atomic_write_text`: a failed or interrupted write never leaves a
  half-written file.
- `prepare_output(out_dir, force)`: checked before a run starts, so that a run never deletes
  a user's files and an unusable output directory is reported at once, naming it.
- `replace_directory(staging, target)`: moves a complete output into place, replacing an
  earlier one, and leaves no `.<name>.old-*` folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputError

CERTIFICATE_NAME = "certificate.json"
CERTIFICATE_FORMAT = "verify-compress-certificate"
"""The "format" field of a certificate (`verifier.certificate.FORMAT`): a folder holding such a
certificate is a previous output, which a new run may replace."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates 0600 files; outputs are meant to be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# The output directory


def prepare_output(out_dir: Path, force: bool) -> None:
    """Check before a run that it may write `out_dir`; raise `OutputError` naming it if not.

    Refused unless `force`: `out_dir` exists and is not a directory, or is a non-empty
    directory that is not a previous output (no `certificate.json` whose "format" is
    `CERTIFICATE_FORMAT`): the run would replace it, deleting the user's files. Refused even
    with `force`: the output cannot be written, because the directory that will hold it (the
    nearest existing ancestor) is not a directory or not writable, or the existing `out_dir`
    is not writable (replacing it moves it and deletes its contents). Writability is tried by
    creating and removing a temporary file. Nothing is created or changed.
    """
    out_dir = Path(out_dir)
    exists = out_dir.exists() or out_dir.is_symlink()
    if exists and not force:
        if not out_dir.is_dir():
            raise OutputError(
                f"{out_dir}: exists and is not a directory; the output needs a directory "
                "(give --force to replace the file)"
            )
        if any(out_dir.iterdir()) and not is_previous_output(out_dir):
            raise OutputError(
                f"{out_dir}: the folder holds files and is not a previous verify-compress "
                f"output (no {CERTIFICATE_NAME} of one); the run would delete them: choose "
                "another output directory or give --force"
            )
    holder = out_dir.absolute().parent
    while not (holder.exists() or holder.is_symlink()) and holder != holder.parent:
        holder = holder.parent
    if not holder.is_dir():
        raise OutputError(f"{out_dir}: cannot be created: {holder} is not a directory")
    _require_writable(holder, out_dir)
    if exists and out_dir.is_dir():
        _require_writable(out_dir, out_dir)


def is_previous_output(directory: Path) -> bool:
    """Whether `directory` holds a verify-compress certificate (a previous run's output)."""
    try:
        document = json.loads((directory / CERTIFICATE_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and document.get("format") == CERTIFICATE_FORMAT


def _require_writable(directory: Path, out_dir: Path) -> None:
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".verify-compress-probe-")
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        place = "" if directory == out_dir else f" in {directory}"
        raise OutputError(
            f"{out_dir}: the output cannot be written there ({reason}{place})"
        ) from None
    os.close(handle)
    os.unlink(probe)


def replace_directory(staging: Path, target: Path) -> None:
    """Move the complete output `staging` to `target`, replacing what `target` was.

    An earlier `target` (a directory, or a file with `--force`) is first moved aside into a
    `.<name>.old-*` folder beside it, then `staging` is renamed into place, then the folder is
    removed. If the rename fails the earlier `target` is moved back. The folder is removed in
    a `finally`, so no `.<name>.old-*` folder is left behind, whatever fails or is interrupted
    (read-only subfolders of the old output are made writable to remove them).
    """
    if not (target.exists() or target.is_symlink()):
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    try:
        previous = retired / "previous"
        os.replace(target, previous)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(previous, target)
            raise
    finally:
        remove_tree(retired)


def remove_tree(path: Path) -> None:
    """Remove the folder `path` as completely as possible, never raising an `OSError`.

    A first pass that fails (say on a read-only subfolder) or is interrupted is followed by a
    second one after making every folder below `path` writable (symlinks are not followed).
    """
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        if path.exists():
            _make_folders_writable(path)
            shutil.rmtree(path, ignore_errors=True)


def _make_folders_writable(root: Path) -> None:
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    for folder, subfolders, _ in os.walk(root):
        for name in subfolders:
            child = os.path.join(folder, name)
            if not os.path.islink(child):
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)
