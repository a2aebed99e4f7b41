"""`verify-compress train`: train a small L1-regularized ReLU MLP and export it as ONNX.

Thin command layer over `verifier/training.py` (needs the optional `train` extra). Registered as
the `train` subcommand by `cli/main.py`; also runnable on its own as
`python -m verify_compress.cli.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from verify_compress.cli import DebugOption, user_errors
from verify_compress.training import (
    BUILTIN_DATASET,
    ExportSummary,
    parse_hidden,
    recipe_named,
    train_and_export,
)


def train(
    output: Annotated[Path, typer.Argument(help="Where to write the trained network (.onnx).")],
    hidden: Annotated[
        str, typer.Option(help="Hidden layer widths, comma-separated (e.g. 32,32).")
    ] = "100,100",
    l1: Annotated[
        float, typer.Option(help="L1 strength: loss += l1 * sum |W| over weights (0 = off).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for initialization and shuffling.")] = 0,
    dataset: Annotated[
        str,
        typer.Option(
            help=f"'{BUILTIN_DATASET}' (scikit-learn 8x8 digits, inputs in [0,1]^64) or a .npz "
            "file with arrays x, y (optionally x_test, y_test), or x_train, y_train, x_test, "
            "y_test, or Xtr, ytr, Xte, yte (e.g. ../shared/datasets/mnist.npz); inputs above 1 "
            "are divided by their maximum."
        ),
    ] = BUILTIN_DATASET,
    recipe: Annotated[
        str,
        typer.Option(
            help="Optimization recipe: 'adam' (Adam lr 3e-3, batch 64, 100 epochs) or 'paper' "
            "(the seed paper's: SGD lr 0.01 momentum 0.9, batch 128, lr x0.1 every 50 epochs, "
            "120 epochs). --epochs, --lr and --batch-size override it."
        ),
    ] = "adam",
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the training data [default: recipe's].")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate [default: recipe's].")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Mini-batch size [default: recipe's].")
    ] = None,
    prune_below: Annotated[
        float,
        typer.Option(help="Set weights with |w| below this to 0 before export (0 = off)."),
    ] = 0.0,
    sample: Annotated[
        Path | None,
        typer.Option(
            help="Also write training inputs to this .npy file, for the main job's --data "
            "(real inputs are cheap witnesses of unstable neurons)."
        ),
    ] = None,
    sample_size: Annotated[
        int, typer.Option(help="How many training inputs --sample holds.")
    ] = 2000,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing on success.")] = False,
    debug: DebugOption = False,
) -> None:
    """Train a ReLU MLP with L1 regularization (deterministic with --seed) and export ONNX.

    Needs the optional `train` extra (torch and scikit-learn).
    """
    console = Console(quiet=quiet)
    with user_errors(debug):
        widths = parse_hidden(hidden)
        chosen = recipe_named(recipe, epochs=epochs, lr=lr, batch_size=batch_size)
        with Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=quiet or not console.is_terminal,
        ) as progress:
            task = progress.add_task("train", total=chosen.epochs, loss="-")

            def show_epoch(epoch: int, loss: float) -> None:
                progress.update(task, completed=epoch, loss=f"{loss:.4f}")

            summary = train_and_export(
                output, dataset, widths, l1, seed, chosen, prune_below,
                on_epoch=show_epoch, sample=sample, sample_size=sample_size,
            )
    console.print(summary_table(summary))


def summary_table(summary: ExportSummary) -> Table:
    network = summary.network
    sizes = [network.input_size, *(layer.outputs for layer in network.layers)]
    table = Table(title=f"trained {summary.path}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("dataset", f"{summary.dataset.name} ({summary.dataset.note})")
    table.add_row("layer sizes", "-".join(str(size) for size in sizes))
    table.add_row("parameters", str(summary.parameters))
    table.add_row("connections (nonzero weights)", str(summary.connections))
    if summary.pruned_weights:
        table.add_row("weights pruned to 0", str(summary.pruned_weights))
        table.add_row("test accuracy before pruning", f"{summary.result.test_accuracy:.2%}")
    table.add_row("train accuracy", f"{summary.train_accuracy:.2%}")
    table.add_row("test accuracy", f"{summary.test_accuracy:.2%}")
    table.add_row("final training loss", f"{summary.result.final_loss:.4f}")
    table.add_row("file size", f"{summary.file_bytes / 1024:.1f} KB")
    if summary.sample is not None:
        table.add_row("--data sample", str(summary.sample))
    return table


if __name__ == "__main__":
    typer.run(train)
