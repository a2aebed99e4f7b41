"""The `verify-compress` command line: parsing, progress and output only; logic is in verifier/.

Shared by every command module (`cli.main` and the modules it registers):
- `user_errors(debug)`: the one error policy. A `VerifyCompressError` (or an `OSError` such as
  a missing or unwritable file) prints one line `error: <message>` to stderr and exits with
  `EXIT_USER_ERROR` (2); with `--debug` the exception propagates with its traceback instead.
  Any other exception is a bug and keeps its traceback.
- `DebugOption`: the `--debug` option every command declares and passes to `user_errors`.

Kept here rather than in `cli.main` so that command modules can import it while `cli.main`
imports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from verifier.errors import VerifyCompressError

EXIT_OK = 0
EXIT_USER_ERROR = 2

DebugOption = Annotated[
    bool, typer.Option("--debug", help="On an error, show the full traceback.")
]


def one_line(message: str) -> str:
    """The message with any line breaks folded to spaces (error output is one line)."""
    return " ".join(message.split())


def describe(error: BaseException) -> str:
    """The user-facing text of an error: its message, or for an OSError its reason and path."""
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or type(error).__name__
        return one_line(f"{error.filename}: {reason}")
    return one_line(str(error) or type(error).__name__)


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Run a command body under the error policy (see the module docstring)."""
    try:
        yield
    except (VerifyCompressError, OSError) as error:
        if debug:
            raise
        typer.echo(f"error: {describe(error)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
