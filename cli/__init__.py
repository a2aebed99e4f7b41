"""The `verify-compress` command line: parsing, progress and output only; logic is in verifier/.

Shared by every command module (`cli.main` and the modules it registers):
- `user_errors(debug)`: the one error policy. A `VerifyCompressError` (or an `OSError` such as
  a missing or unwritable file) prints one line `error: <message>` to stderr and exits with
  `EXIT_USER_ERROR` (2); `--debug` prints the traceback before that line and never changes
  the exit status. Any other exception is a bug and keeps its traceback.
- `DebugOption`: the `--debug` option every command declares and passes to `user_errors`.
- `PlainFlagsCommand`, `PlainFlagsGroup`: the typer classes of every command and of the app:
  their help lists a boolean flag (`--json`, `--debug`, `--help`) without a value type.

Kept here rather than in `cli.main` so that command modules can import it while `cli.main`
imports them.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

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
            traceback.print_exc()
        typer.echo(f"error: {describe(error)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _plain_flags(params: Sequence[Any]) -> Any:
    """`params` with every flag given an empty metavar: typer's rich help otherwise shows a
    boolean flag's type, `--json <bool>`, as if the option took a value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class PlainFlagsCommand(TyperCommand):
    """A command whose help lists boolean flags without a value type (see `_plain_flags`)."""

    def get_params(self, ctx: Any) -> Any:
        return _plain_flags(super().get_params(ctx))


class PlainFlagsGroup(TyperGroup):
    """The app's group: `--version` and `--help` listed without a value type."""

    def get_params(self, ctx: Any) -> Any:
        return _plain_flags(super().get_params(ctx))
