"""Training small ReLU MLPs with L1 regularization, to produce networks worth compressing.

Stage: before the pipeline. This module makes the *inputs* of ONNX -> IR -> ... -> certificate:
it trains a dense ReLU network on a dataset whose inputs lie in [0,1]^n and exports it as an
IR `Network` with float32 weights (then ONNX, through `verifier.onnx_export`). Nothing here is
part of any proof; the certificate treats the exported weights as exact rationals like any
other network.

L1 regularization (loss = cross-entropy + l1 * sum |W| over weight matrices, not biases) is the
paper's recipe for networks with many stable neurons: small incoming weights make a neuron's
pre-activation range on the domain narrow, so it is more often entirely on one side of zero.

torch and scikit-learn are an optional extra (`pip install 'verify-compress[train]'`): they
are imported inside the functions that need them, never at module import time, and a missing
one raises `TrainingError` saying how to install it.

Determinism: a run is a pure function of (data, hyperparameters, seed). Weights are initialized
and batches shuffled from generators seeded with `seed`, torch runs single-threaded with
deterministic algorithms, and torch's global settings are restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import VerifyCompressError
from .ir import AffineLayer, Network

if TYPE_CHECKING:
    import torch

FloatArray = npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.int64]

INSTALL_HINT = "pip install 'verify-compress[train]'"
BUILTIN_DATASET = "digits"
SPLIT_SEED = 0
TEST_FRACTION = 0.2
DIGITS_PIXEL_MAX = 16.0

EpochCallback = Callable[[int, float], None]

NPZ_LAYOUTS = (
    ("x", "y", "x_test", "y_test"),
    ("x_train", "y_train", "x_test", "y_test"),
    ("Xtr", "ytr", "Xte", "yte"),
)
"""Array names a `.npz` dataset may use: (train inputs, train labels, test inputs, test labels).
The last is the layout of `../shared/datasets/mnist.npz` (uint8 MNIST, 60k/10k)."""


class TrainingError(VerifyCompressError):
    """Training cannot run: a missing optional extra or bad hyperparameters."""


class DatasetError(TrainingError):
    """A dataset cannot be loaded: not found, missing arrays, mismatched shapes, bad values."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Flattened inputs in [0,1] (float64) and integer class labels 0..classes-1.

    `note` says how the data was obtained or rescaled, for the user to see.
    """

    name: str
    x_train: FloatArray
    y_train: LabelArray
    x_test: FloatArray
    y_test: LabelArray
    classes: int
    note: str = ""

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to optimize: the optimizer, its step size and schedule, batch size and epochs.

    `lr_step` > 0 multiplies the learning rate by `lr_gamma` every `lr_step` epochs (torch's
    StepLR); 0 keeps it constant. `momentum` is used by SGD only.
    """

    optimizer: str = "adam"
    lr: float = 3e-3
    batch_size: int = 64
    epochs: int = 100
    momentum: float = 0.0
    lr_step: int = 0
    lr_gamma: float = 1.0


OPTIMIZERS = ("adam", "sgd")
RECIPES = {
    "adam": Recipe(),
    # yuxwind/ExactCompression train_fcnn.py: SGD(lr 0.01, momentum 0.9), batch 128, StepLR
    # (50 epochs, x0.1), 120 epochs, L1 on every Linear weight, cross-entropy on the logits.
    "paper": Recipe("sgd", lr=0.01, batch_size=128, epochs=120, momentum=0.9, lr_step=50,
                    lr_gamma=0.1),
}
"""Named recipes: `adam` (the default, quick on small data) and `paper` (the seed paper's)."""


def recipe_named(
    name: str, epochs: int | None = None, lr: float | None = None, batch_size: int | None = None
) -> Recipe:
    """The named recipe, with epochs, lr and batch size replaced where given (not None)."""
    if name not in RECIPES:
        raise TrainingError(f"--recipe: unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    return dataclasses.replace(
        recipe,
        epochs=recipe.epochs if epochs is None else epochs,
        lr=recipe.lr if lr is None else lr,
        batch_size=recipe.batch_size if batch_size is None else batch_size,
    )


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """A trained network and its accuracies (measured on the exported float32 weights).

    Accuracies are None when no test data was given. `final_loss` is the mean training loss
    (cross-entropy plus the L1 term) over the last epoch. `model` is the trained
    `torch.nn.Sequential` itself (typed Any so that this module never needs torch to import).
    """

    network: Network
    train_accuracy: float
    test_accuracy: float | None
    final_loss: float
    epochs: int
    model: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    """What `train_and_export` did: the dataset, the training result, pruning and the file."""

    dataset: Dataset
    result: TrainResult
    network: Network
    train_accuracy: float
    test_accuracy: float
    pruned_weights: int
    path: Path
    file_bytes: int
    sample: Path | None = None

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)

    @property
    def connections(self) -> int:
        return sum(layer.connections for layer in self.network.layers)


def missing_extra(package: str) -> TrainingError:
    return TrainingError(f"training needs the optional extra ({package} is not installed): "
                         f"{INSTALL_HINT}")


def parse_hidden(text: str) -> tuple[int, ...]:
    """Hidden layer widths from a comma-separated list such as "32,32" (empty: no hidden layer)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    widths: list[int] = []
    for part in parts:
        if not part.isdigit() or int(part) <= 0:
            raise TrainingError(f"--hidden: '{part}' is not a positive integer (e.g. 32,32)")
        widths.append(int(part))
    return tuple(widths)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def load_dataset(name_or_path: str | Path) -> Dataset:
    """The builtin "digits" dataset, or a `.npz` file in one of the NPZ_LAYOUTS.

    Without test arrays in the file, a fixed seeded 80/20 split is used
    (the same split for every run, independent of the training seed). Inputs are flattened to
    2-D; inputs with values above 1 are divided by their maximum (and `note` says so), since the
    networks are meant to be verified on [0,1]^n.
    """
    if str(name_or_path) == BUILTIN_DATASET:
        return load_digits()
    return load_npz(Path(name_or_path))


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, pixels / 16 so inputs lie in [0,1]^64."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise missing_extra("scikit-learn") from error
    bunch = sklearn_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / DIGITS_PIXEL_MAX
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, y_train, x_test, y_test = split(x, y)
    return Dataset(
        BUILTIN_DATASET, x_train, y_train, x_test, y_test, 10,
        "scikit-learn 8x8 digits, pixels / 16, seeded 80/20 split",
    )


def load_npz(path: Path) -> Dataset:
    if not path.is_file():
        raise DatasetError(
            f"dataset not found: {path} "
            f"(use '{BUILTIN_DATASET}' or a .npz file with x and y arrays)"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable .npz file ({error})") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single array, not a .npz archive with x and y arrays")
    try:
        with loaded as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot read its arrays ({error})") from error
    x_key, y_key, x_test_key, y_test_key = npz_layout(path, arrays)
    x = flatten_inputs(path, x_key, arrays[x_key])
    y = check_labels(path, y_key, arrays[y_key], len(x))
    has_test = x_test_key in arrays
    if has_test:
        x_test = flatten_inputs(path, x_test_key, arrays[x_test_key])
        y_test = check_labels(path, y_test_key, arrays[y_test_key], len(x_test))
        if x_test.shape[1] != x.shape[1]:
            raise DatasetError(
                f"{path}: {x_test_key} has {x_test.shape[1]} features but {x_key} has "
                f"{x.shape[1]}"
            )
        x_train, y_train = x, y
    else:
        x_train, y_train, x_test, y_test = split(x, y)
    notes = ["given test split" if has_test else "seeded 80/20 split"]
    scale = float(max(x_train.max(), x_test.max()))
    if scale > 1.0:
        x_train, x_test = x_train / scale, x_test / scale
        notes.append(f"inputs divided by their maximum {scale:g} to lie in [0,1]")
    classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(path.name, x_train, y_train, x_test, y_test, classes, ", ".join(notes))


def npz_layout(path: Path, arrays: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """The names (train x, train y, test x, test y) of the first layout in NPZ_LAYOUTS whose
    training arrays are present; its test arrays must be both present or both absent."""
    for layout in NPZ_LAYOUTS:
        x_key, y_key, x_test_key, y_test_key = layout
        if x_key in arrays and y_key in arrays:
            if (x_test_key in arrays) != (y_test_key in arrays):
                raise DatasetError(
                    f"{path}: '{x_test_key}' and '{y_test_key}' must be given together"
                )
            return layout
    expected = "; ".join(f"{x} and {y}" for x, y, _, _ in NPZ_LAYOUTS)
    raise DatasetError(
        f"{path}: no training arrays found (expected {expected}; "
        f"found: {', '.join(sorted(arrays)) or 'none'})"
    )


def flatten_inputs(path: Path, key: str, array: npt.NDArray[Any]) -> FloatArray:
    if array.ndim < 2 or array.shape[0] == 0:
        raise DatasetError(
            f"{path}: '{key}' must hold at least one example, got shape {array.shape}"
        )
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: '{key}' must be numeric, got dtype {array.dtype}")
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise DatasetError(f"{path}: '{key}' contains NaN or infinite values")
    if flat.min() < 0.0:
        raise DatasetError(
            f"{path}: '{key}' has negative values (min {flat.min():g}); inputs must be >= 0 "
            "(they are scaled to [0,1])"
        )
    return flat


def check_labels(path: Path, key: str, array: npt.NDArray[Any], examples: int) -> LabelArray:
    if array.ndim != 1 or array.shape[0] != examples:
        raise DatasetError(
            f"{path}: '{key}' must be a 1-D array of {examples} labels (one per example), "
            f"got shape {array.shape}"
        )
    if array.dtype.kind not in "iu" and not (
        array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array))
    ):
        raise DatasetError(
            f"{path}: '{key}' must hold integer class labels, got dtype {array.dtype}"
        )
    labels = array.astype(np.int64)
    if labels.min() < 0:
        raise DatasetError(f"{path}: '{key}' has a negative class label {labels.min()}")
    return labels


def split(
    x: FloatArray, y: LabelArray
) -> tuple[FloatArray, LabelArray, FloatArray, LabelArray]:
    """A fixed seeded split: the last TEST_FRACTION of a SPLIT_SEED permutation is the test set."""
    if len(x) < 2:
        raise DatasetError(f"a dataset needs at least 2 examples to split, got {len(x)}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test_count = max(1, round(len(x) * TEST_FRACTION))
    train_index, test_index = order[:-test_count], order[-test_count:]
    return x[train_index], y[train_index], x[test_index], y[test_index]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise missing_extra("torch") from error
    return torch


@contextlib.contextmanager
def deterministic_torch(torch_module: Any, seed: int) -> Iterator[None]:
    """Seed torch, force single-threaded deterministic kernels, and restore all afterwards."""
    threads = torch_module.get_num_threads()
    deterministic = torch_module.are_deterministic_algorithms_enabled()
    with torch_module.random.fork_rng(devices=[]):
        torch_module.manual_seed(seed)
        torch_module.set_num_threads(1)
        torch_module.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch_module.use_deterministic_algorithms(deterministic)
            torch_module.set_num_threads(threads)


def check_hyperparameters(
    x: npt.NDArray[Any], y: npt.NDArray[Any], hidden: Sequence[int], l1: float, recipe: Recipe
) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise TrainingError(f"need x of shape (n, features) and y of shape (n,), got "
                            f"{x.shape} and {y.shape}")
    if any(width <= 0 for width in hidden):
        raise TrainingError(f"hidden layer widths must be positive, got {list(hidden)}")
    if not l1 >= 0.0:
        raise TrainingError(f"--l1 must be >= 0, got {l1}")
    if recipe.optimizer not in OPTIMIZERS:
        raise TrainingError(
            f"optimizer {recipe.optimizer!r} is not supported; supported: {', '.join(OPTIMIZERS)}"
        )
    if recipe.epochs < 0:
        raise TrainingError(f"--epochs must be >= 0, got {recipe.epochs}")
    if not recipe.lr > 0.0:
        raise TrainingError(f"--lr must be > 0, got {recipe.lr}")
    if recipe.batch_size <= 0:
        raise TrainingError(f"--batch-size must be > 0, got {recipe.batch_size}")
    if recipe.lr_step < 0 or not recipe.lr_gamma > 0.0 or not recipe.momentum >= 0.0:
        raise TrainingError(
            f"the learning-rate schedule needs lr_step >= 0, lr_gamma > 0 and momentum >= 0, "
            f"got {recipe.lr_step}, {recipe.lr_gamma} and {recipe.momentum}"
        )


def build_model(torch_module: Any, sizes: Sequence[int]) -> torch.nn.Sequential:
    """Linear layers with ReLU between them (none after the last), default torch init."""
    nn = torch_module.nn
    modules: list[torch.nn.Module] = []
    for position, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        modules.append(nn.Linear(n_in, n_out))
        if position < len(sizes) - 2:
            modules.append(nn.ReLU())
    model: torch.nn.Sequential = nn.Sequential(*modules)
    return model


def linear_layers(model: torch.nn.Sequential) -> list[torch.nn.Linear]:
    import torch

    return [module for module in model if isinstance(module, torch.nn.Linear)]


def to_network(model: torch.nn.Sequential, name: str) -> Network:
    """The IR of a trained model, with its float32 weights copied exactly."""
    linears = linear_layers(model)
    layers = [
        AffineLayer(
            linear.weight.detach().cpu().numpy().astype(np.float32, copy=True),
            linear.bias.detach().cpu().numpy().astype(np.float32, copy=True),
            relu=position < len(linears) - 1,
        )
        for position, linear in enumerate(linears)
    ]
    return Network(tuple(layers), name=name)


def train_mlp(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    hidden: Sequence[int],
    l1: float,
    seed: int,
    recipe: Recipe = RECIPES["adam"],
    x_test: npt.NDArray[Any] | None = None,
    y_test: npt.NDArray[Any] | None = None,
    classes: int | None = None,
    name: str = "mlp",
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a ReLU MLP (inputs -> hidden... -> classes logits) as `recipe` says.

    Loss per batch: mean cross-entropy + l1 * sum of |W| over all weight matrices (biases are
    not penalized), as in the paper's code. `classes` defaults to max(y) + 1.
    `on_epoch(epoch, mean_loss)` is called after each epoch (for progress displays). The same
    arguments give bit-identical weights.
    """
    check_hyperparameters(x, y, hidden, l1, recipe)
    torch = import_torch()
    labels = np.asarray(y, dtype=np.int64)
    outputs = classes if classes is not None else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= outputs:
        raise TrainingError(
            f"labels must lie in 0..{outputs - 1}, got {labels.min()}..{labels.max()}"
        )
    sizes = [int(x.shape[1]), *(int(width) for width in hidden), outputs]
    with deterministic_torch(torch, seed):
        model = build_model(torch, sizes)
        inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
        targets = torch.as_tensor(labels)
        generator = torch.Generator().manual_seed(seed)
        optimizer = make_optimizer(torch, model, recipe)
        weights = [linear.weight for linear in linear_layers(model)]
        final_loss = float("nan")
        for epoch in range(recipe.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total, batches = 0.0, 0
            for start in range(0, len(inputs), recipe.batch_size):
                batch = order[start:start + recipe.batch_size]
                loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                if l1 > 0.0:
                    loss = loss + l1 * sum(weight.abs().sum() for weight in weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                batches += 1
            if recipe.lr_step and (epoch + 1) % recipe.lr_step == 0:
                for group in optimizer.param_groups:
                    group["lr"] *= recipe.lr_gamma
            final_loss = total / batches
            if on_epoch is not None:
                on_epoch(epoch + 1, final_loss)
        network = to_network(model, name)
    test_accuracy = None
    if x_test is not None and y_test is not None:
        test_accuracy = accuracy(network, x_test, y_test)
    return TrainResult(
        network, accuracy(network, x, labels), test_accuracy, final_loss, recipe.epochs, model
    )


def make_optimizer(torch_module: Any, model: torch.nn.Sequential, recipe: Recipe) -> Any:
    if recipe.optimizer == "sgd":
        return torch_module.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    return torch_module.optim.Adam(model.parameters(), lr=recipe.lr)


# ---------------------------------------------------------------------------------------------
# Measuring, pruning, exporting
# ---------------------------------------------------------------------------------------------


def predict(network: Network, x: npt.ArrayLike) -> LabelArray:
    """Predicted classes: argmax of the float64 evaluation of the stored weights."""
    return np.asarray(np.argmax(network.forward(x).output, axis=1), dtype=np.int64)


def accuracy(network: Network, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    labels = np.asarray(y, dtype=np.int64)
    return float(np.mean(predict(network, x) == labels))


def count_parameters(network: Network) -> int:
    return sum(layer.weights.size + layer.bias.size for layer in network.layers)


def prune_weights(network: Network, threshold: float) -> tuple[Network, int]:
    """Set every weight with |w| < threshold to exactly 0 (biases untouched).

    Returns the pruned network and how many nonzero weights were zeroed. This changes the
    function: accuracy must be re-measured, and the certificate is about the pruned network.
    """
    if not threshold >= 0.0:
        raise TrainingError(f"--prune-below must be >= 0, got {threshold}")
    layers = []
    zeroed = 0
    for layer in network.layers:
        small = (np.abs(layer.weights) < threshold) & (layer.weights != 0)
        zeroed += int(small.sum())
        weights = np.where(small, np.zeros_like(layer.weights), layer.weights)
        layers.append(AffineLayer(weights, layer.bias.copy(), layer.relu))
    return network.with_layers(layers), zeroed


def train_and_export(
    output: Path,
    dataset: str | Path = BUILTIN_DATASET,
    hidden: Sequence[int] = (100, 100),
    l1: float = 0.0,
    seed: int = 0,
    recipe: Recipe = RECIPES["adam"],
    prune_below: float = 0.0,
    on_epoch: EpochCallback | None = None,
    sample: Path | None = None,
    sample_size: int = 2000,
) -> ExportSummary:
    """Load the dataset, train, optionally prune, and write the float32 ONNX file atomically.

    With `sample`, also write `sample_size` training inputs (a seeded choice, float64 rows in
    [0,1]) as a `.npy` file for the main job's `--data`: real inputs are the cheapest
    witnesses of unstable neurons. Accuracies in the summary are those of the exported
    (possibly pruned) network.
    """
    from .files import atomic_write_bytes
    from .onnx_export import save_onnx

    if sample is not None and (sample.suffix != ".npy" or sample_size <= 0):
        raise TrainingError(f"--sample must be a .npy path and --sample-size > 0, got "
                            f"{sample} and {sample_size}")
    data = load_dataset(dataset)
    result = train_mlp(
        data.x_train, data.y_train, hidden, l1, seed, recipe,
        x_test=data.x_test, y_test=data.y_test, classes=data.classes, name=Path(output).stem,
        on_epoch=on_epoch,
    )
    network, pruned = prune_weights(result.network, prune_below)
    save_onnx(network, output, dtype="float32")
    if sample is not None:
        rows = training_sample(data, sample_size, seed)
        buffer = io.BytesIO()
        np.save(buffer, rows)
        atomic_write_bytes(sample, buffer.getvalue())
    return ExportSummary(
        dataset=data,
        result=result,
        network=network,
        train_accuracy=accuracy(network, data.x_train, data.y_train),
        test_accuracy=accuracy(network, data.x_test, data.y_test),
        pruned_weights=pruned,
        path=Path(output),
        file_bytes=Path(output).stat().st_size,
        sample=sample,
    )


def training_sample(data: Dataset, size: int, seed: int) -> FloatArray:
    """`size` distinct training inputs (all of them when there are fewer), chosen by `seed`."""
    count = min(size, len(data.x_train))
    chosen = np.random.default_rng(seed).choice(len(data.x_train), size=count, replace=False)
    return np.ascontiguousarray(data.x_train[np.sort(chosen)], dtype=np.float64)
