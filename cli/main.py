"""The `verify-compress` typer app and its entry point `main`.

Commands are typer functions registered on `app` below; each wraps its body in
`cli.user_errors(debug, as_json)` so every command follows one error policy (exit 2, one line on
stderr, and with `--json` an error document on stdout).

Routing: `verify-compress NET.onnx [options]` runs the main job, while
`verify-compress inspect NET.onnx` and `verify-compress check CERT` run subcommands. `main`
makes both work by inserting the default command name (`DEFAULT_COMMAND`, "run") in front of
the arguments when they do not start with a registered command or a top-level option (the
`run` and `check` commands live in `cli/run.py`). Options such as `--debug` belong to a
command, so they follow its name (or the network, for the default command). To add a
command, define it (in its own `cli/<name>.py` for anything substantial) and register it here
with `app.command(name, cls=PlainFlagsCommand)(function)` (its help then lists boolean flags
without a value type).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verify_compress import __version__
from verify_compress.cli import DebugOption, PlainFlagsCommand, PlainFlagsGroup, user_errors
from verify_compress.cli.batch import batch
from verify_compress.cli.run import check, run
from verify_compress.cli.train import train
from verify_compress.summary import NetworkSummary, network_summary

PROG_NAME = "verify-compress"
DEFAULT_COMMAND = "run"
# Arguments that belong to the app itself, not to the default command.
ROOT_OPTIONS = frozenset({"--help", "--version"})

app = typer.Typer(
    name=PROG_NAME,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Docstrings are wrapped at 100 columns in the source; markdown mode joins their lines
    # into paragraphs (blank lines separate them) so the terminal wraps them once.
    rich_markup_mode="markdown",
    cls=PlainFlagsGroup,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG_NAME} {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Exact compression of ReLU networks by certified neuron stability.

    Errors exit with status 2 and one line on stderr (add --debug to a command for a traceback).
    """


@app.command(cls=PlainFlagsCommand)
def inspect(
    network: Annotated[Path, typer.Argument(help="The ONNX network to describe.")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the summary as JSON instead of tables (an error as "
            '{"error": ..., "exit_code": 2}).',
        ),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Show a network's input shape, affine layers, sizes and the ONNX ops folded into them."""
    with user_errors(debug, as_json):
        # Imported here: onnx loads slowly and is not needed for --help.
        from verify_compress.onnx_import import load_network

        summary = network_summary(load_network(network))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary, Console())


def print_summary(summary: NetworkSummary, console: Console) -> None:
    """The human form of `inspect`: a header, one table row per layer, and the totals."""
    shape = " x ".join(str(d) for d in summary["input_shape"])
    console.print(f"[bold]{summary['name']}[/bold]", highlight=False)
    console.print(
        f"input shape {shape} ({summary['input_size']} inputs), {summary['output_size']} outputs",
        highlight=False,
    )
    table = Table(show_footer=True)
    totals = summary["totals"]
    table.add_column("layer", footer="total")
    table.add_column("inputs", justify="right")
    table.add_column("outputs", justify="right")
    table.add_column("ReLU", justify="center", footer=f"{totals['relu_neurons']} neurons")
    table.add_column("parameters", justify="right", footer=str(totals["parameters"]))
    table.add_column("connections", justify="right", footer=str(totals["connections"]))
    for position, layer in enumerate(summary["layers"]):
        table.add_row(
            str(position),
            str(layer["inputs"]),
            str(layer["outputs"]),
            "yes" if layer["relu"] else "no",
            str(layer["parameters"]),
            str(layer["connections"]),
        )
    console.print(table)
    folded = ", ".join(summary["folded_ops"]) or "none"
    console.print(f"ONNX ops folded into the affine layers: {folded}", highlight=False)


app.command("run", cls=PlainFlagsCommand)(run)
app.command("check", cls=PlainFlagsCommand)(check)
app.command("train", cls=PlainFlagsCommand)(train)
app.command("batch", cls=PlainFlagsCommand)(batch)


def route(args: Sequence[str], commands: Collection[str]) -> list[str]:
    """`args` with `DEFAULT_COMMAND` in front when they name no command and it is registered.

    Untouched: empty arguments (the app prints its help), a first argument that is a
    registered command, or a top-level option (`--help`, `--version`).
    """
    routed = list(args)
    if not routed or routed[0] in commands or routed[0] in ROOT_OPTIONS:
        return routed
    if DEFAULT_COMMAND in commands:
        return [DEFAULT_COMMAND, *routed]
    return routed


def command_names() -> set[str]:
    """Names of the commands registered on `app`."""
    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: route the arguments (see `route`), then run the app."""
    args = sys.argv[1:] if argv is None else argv
    app(args=route(args, command_names()), prog_name=PROG_NAME)


if __name__ == "__main__":
    main()
