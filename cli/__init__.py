"""The `verify-compress` command line: parsing, progress and output only; logic is in verifier/.

Shared by every command module (`cli/main.py` and the modules it registers):
- `user_errors(debug, as_json)`: the one error policy. A `VerifyCompressError` (or an
  `OSError` such as a missing or unwritable file) prints one line `error: <message>` to stderr
  and exits with `EXIT_USER_ERROR` (2); with `as_json` (the command's `--json`) it also prints
  `{"error": "<message>", "exit_code": 2}` on stdout, so a program reading the JSON document
  gets one. `--debug` prints the traceback before that line and never changes the exit
  status. Any other exception is a bug and keeps its traceback.
- `DebugOption`: the `--debug` option every command declares and passes to `user_errors`.
- `PlainFlagsCommand`, `PlainFlagsGroup`: the typer classes of every command and of the app:
  their help lists a boolean flag (`--json`, `--debug`, `--help`) without a value type, and a
  command line that does not parse (an unknown option, a bad value) with `--json` among its
  arguments also prints the error document on stdout (`error_document`).

Kept here rather than in `cli/main.py` so that command modules can import it while `cli/main.py`
imports them.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from verify_compress.errors import VerifyCompressError

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


def error_document(message: str, exit_code: int = EXIT_USER_ERROR) -> str:
    """The JSON printed on stdout for a failed command given `--json`."""
    return json.dumps({"error": one_line(message), "exit_code": exit_code})


@contextlib.contextmanager
def user_errors(debug: bool, as_json: bool = False) -> Iterator[None]:
    """Run a command body under the error policy (see the module docstring)."""
    try:
        yield
    except (VerifyCompressError, OSError) as error:
        if debug:
            traceback.print_exc()
        message = describe(error)
        if as_json:
            typer.echo(error_document(message))
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _plain_flags(params: Sequence[Any]) -> Any:
    """`params` with every flag given an empty metavar: typer's rich help otherwise shows a
    boolean flag's type, `--json <bool>`, as if the option took a value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _is_usage_error(error: BaseException) -> bool:
    """Whether `error` is click's UsageError (typer vendors click, so matched by name)."""
    return any(kind.__name__ == "UsageError" for kind in type(error).__mro__)


class PlainFlagsCommand(TyperCommand):
    """A command whose help lists boolean flags without a value type (see `_plain_flags`),
    and whose command-line errors are also a JSON document on stdout under `--json`."""

    def get_params(self, ctx: Any) -> Any:
        return _plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        wants_json = "--json" in args
        try:
            return list(super().parse_args(ctx, args))
        except Exception as error:
            if wants_json and _is_usage_error(error):
                format_message = getattr(error, "format_message", None)
                message = format_message() if callable(format_message) else str(error)
                code = getattr(error, "exit_code", EXIT_USER_ERROR)
                typer.echo(error_document(str(message), code))
            raise


class PlainFlagsGroup(TyperGroup):
    """The app's group: `--version` and `--help` listed without a value type."""

    def get_params(self, ctx: Any) -> Any:
        return _plain_flags(super().get_params(ctx))
