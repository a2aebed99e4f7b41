"""The installed package has one unambiguous name, `verify_compress`: the repository's `verifier/`
and `cli/` folders install as `verify_compress` and `verify_compress.cli`, so a user's own
`verifier` or `cli` module never collides with ours."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_distribution_installs_only_the_verify_compress_top_level_package() -> None:
    top_level = importlib.metadata.distribution("verify-compress").read_text("top_level.txt")
    assert top_level is not None
    assert top_level.split() == ["verify_compress"]


def test_the_command_is_the_cli_inside_the_package() -> None:
    (script,) = [
        entry
        for entry in importlib.metadata.distribution("verify-compress").entry_points
        if entry.group == "console_scripts"
    ]
    assert (script.name, script.value) == ("verify-compress", "verify_compress.cli.main:main")


def test_every_subpackage_of_the_library_folder_is_packaged() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "verify_compress"
        + "".join("." + part for part in init.parent.relative_to(ROOT / "verifier").parts)
        for init in (ROOT / "verifier").rglob("__init__.py")
    }
    assert folders | {"verify_compress.cli"} == set(config["packages"])


def test_the_library_imports_under_its_installed_name_from_any_folder(tmp_path: Path) -> None:
    script = (
        "import verify_compress.check, verify_compress.cli.main; print(verify_compress.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == importlib.metadata.version("verify-compress")
