"""Tests for verifier/training.py and the `train` command, and for the bundled models in models/.

Tests that train need torch (the optional `train` extra) and skip cleanly without it; the dataset
validation and bundled-model tests need only numpy (and scikit-learn for the digits data).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from verify_compress.cli.train import train
from verify_compress.training import (
    RECIPES,
    DatasetError,
    Recipe,
    TrainingError,
    count_parameters,
    load_dataset,
    parse_hidden,
    prune_weights,
    recipe_named,
    train_and_export,
    train_mlp,
)

from conftest import random_network

MODELS = Path(__file__).resolve().parents[1] / "models"
MODELS_README = MODELS / "README.md"
SHARED_MNIST = MODELS.parents[1] / "shared" / "datasets" / "mnist.npz"
ACCURACY_SLACK = 0.005
DOCUMENTED_TORCH = "2.13.0"


def toy_data(seed: int = 0, count: int = 120, features: int = 6) -> tuple[Any, Any]:
    """Inputs in [0,1]^features labelled by the argmax of a fixed linear map (3 classes)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(count, features))
    y = np.argmax(x @ rng.normal(size=(features, 3)), axis=1)
    return x, y


def train_toy(seed: int = 0, l1: float = 0.0, epochs: int = 2) -> Any:
    x, y = toy_data()
    return train_mlp(x, y, (5,), l1, seed, Recipe(lr=0.01, batch_size=16, epochs=epochs))


def same_weights(first: Any, second: Any) -> bool:
    return all(
        a.weights.tobytes() == b.weights.tobytes() and a.bias.tobytes() == b.bias.tobytes()
        for a, b in zip(first.layers, second.layers, strict=True)
    )


def command_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(train)
    return app


def write_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


# --- training (needs torch) ------------------------------------------------------------------


def test_training_twice_with_the_same_seed_gives_bit_identical_weights() -> None:
    pytest.importorskip("torch")
    assert same_weights(train_toy(seed=3).network, train_toy(seed=3).network)


def test_a_different_seed_gives_different_weights() -> None:
    pytest.importorskip("torch")
    assert not same_weights(train_toy(seed=3).network, train_toy(seed=4).network)


def test_training_leaves_torch_global_settings_as_it_found_them() -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    state = torch.get_rng_state()
    train_toy()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.get_rng_state(), state)


def test_the_trained_network_is_a_float32_relu_mlp_of_the_requested_shape() -> None:
    pytest.importorskip("torch")
    network = train_toy().network
    assert [layer.weights.shape for layer in network.layers] == [(5, 6), (3, 5)]
    assert [layer.relu for layer in network.layers] == [True, False]
    assert network.dtype == np.float32
    assert count_parameters(network) == 6 * 5 + 5 + 5 * 3 + 3


def test_the_network_ir_computes_what_the_torch_model_computes() -> None:
    torch = pytest.importorskip("torch")
    x, _ = toy_data(seed=1)
    result = train_toy(epochs=5)
    with torch.no_grad():
        logits = result.model(torch.as_tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(result.network.forward(x).output, logits, atol=1e-5)


def test_l1_regularization_shrinks_the_total_weight_magnitude() -> None:
    pytest.importorskip("torch")

    def magnitude(l1: float) -> float:
        network = train_toy(l1=l1, epochs=30).network
        return float(sum(np.abs(layer.float_weights).sum() for layer in network.layers))

    assert magnitude(0.05) < 0.8 * magnitude(0.0)


def test_bad_hyperparameters_are_refused_with_the_option_named() -> None:
    x, y = toy_data()
    with pytest.raises(TrainingError, match="--batch-size"):
        train_mlp(x, y, (4,), 0.0, 0, Recipe(lr=0.01, batch_size=0, epochs=1))
    with pytest.raises(TrainingError, match="--l1"):
        train_mlp(x, y, (4,), -1.0, 0, Recipe(lr=0.01, batch_size=8, epochs=1))
    with pytest.raises(TrainingError, match="'lbfgs' is not supported; supported: adam, sgd"):
        train_mlp(x, y, (4,), 0.0, 0, Recipe(optimizer="lbfgs"))


def test_without_torch_training_says_how_to_install_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    x, y = toy_data()
    with pytest.raises(TrainingError, match=re.escape("pip install 'verify-compress[train]'")):
        train_mlp(x, y, (4,), 0.0, 0, Recipe(lr=0.01, batch_size=8, epochs=1))


def test_the_exported_onnx_file_predicts_what_the_trained_model_predicts(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    onnx_import = pytest.importorskip("verify_compress.onnx_import")
    x, y = toy_data()
    data = write_npz(tmp_path / "toy.npz", x=x, y=y)
    summary = train_and_export(
        tmp_path / "toy.onnx", data, hidden=(5,), recipe=Recipe(lr=0.01, batch_size=16, epochs=5)
    )
    loaded = onnx_import.load_network(tmp_path / "toy.onnx")
    with torch.no_grad():
        logits = summary.result.model(torch.as_tensor(x, dtype=torch.float32)).numpy()
    assert same_weights(loaded, summary.network)
    assert np.array_equal(np.argmax(loaded.forward(x).output, axis=1), np.argmax(logits, axis=1))


def test_pruning_on_export_zeroes_small_weights_and_remeasures_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    x, y = toy_data()
    data = write_npz(tmp_path / "toy.npz", x=x, y=y)
    arguments: dict[str, Any] = {"hidden": (5,), "recipe": Recipe(lr=0.01, batch_size=16, epochs=5)}
    plain = train_and_export(tmp_path / "plain.onnx", data, **arguments)
    pruned = train_and_export(tmp_path / "pruned.onnx", data, prune_below=0.2, **arguments)
    assert pruned.pruned_weights > 0
    assert pruned.connections == plain.connections - pruned.pruned_weights
    dataset = load_dataset(data)
    predictions = np.argmax(pruned.network.forward(dataset.x_test).output, axis=1)
    assert pruned.test_accuracy == np.mean(predictions == dataset.y_test)


def test_the_train_command_prints_accuracy_and_size(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("verify_compress.onnx_export")
    x, y = toy_data()
    data = write_npz(tmp_path / "toy.npz", x=x, y=y)
    output = tmp_path / "toy.onnx"
    result = CliRunner().invoke(
        command_app(),
        [str(output), "--dataset", str(data), "--hidden", "4", "--epochs", "2", "--lr", "0.01"],
    )
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "KB" in result.output
    assert output.is_file()


def test_the_step_size_decays_every_lr_step_epochs() -> None:
    pytest.importorskip("torch")
    x, y = toy_data()
    sgd = dataclasses.replace(RECIPES["paper"], batch_size=16, lr_step=1)

    def weights_after(epochs: int, gamma: float) -> Any:
        recipe = dataclasses.replace(sgd, epochs=epochs, lr_gamma=gamma)
        return train_mlp(x, y, (5,), 1e-3, 0, recipe).network

    # A step size decayed to ~0 after the first epoch leaves the weights where epoch 1 left them.
    assert same_weights(weights_after(3, 1e-30), weights_after(1, 1e-30))
    assert not same_weights(weights_after(3, 1.0), weights_after(1, 1.0))


def test_the_train_command_writes_a_sample_of_training_inputs_for_data(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("verify_compress.onnx_export")
    x, y = toy_data()
    data = write_npz(tmp_path / "toy.npz", x=x, y=y)
    sample = tmp_path / "sample.npy"
    result = CliRunner().invoke(
        command_app(),
        [str(tmp_path / "toy.onnx"), "--dataset", str(data), "--hidden", "4", "--epochs", "1",
         "--recipe", "paper", "--sample", str(sample), "--sample-size", "10"],
    )
    assert result.exit_code == 0, result.output
    rows = np.load(sample)
    training_rows = {row.tobytes() for row in load_dataset(data).x_train}
    assert rows.shape == (10, 6) and rows.dtype == np.float64
    assert all(row.tobytes() in training_rows for row in rows)


# --- pruning, parsing and datasets (no torch needed) ----------------------------------------


def test_pruning_zeroes_exactly_the_weights_below_the_threshold() -> None:
    network = random_network(np.random.default_rng(0), [4, 6, 2])
    pruned, zeroed = prune_weights(network, 0.5)
    for before, after in zip(network.layers, pruned.layers, strict=True):
        small = np.abs(before.weights) < 0.5
        assert np.all(after.weights[small] == 0)
        assert np.array_equal(after.weights[~small], before.weights[~small])
        assert np.array_equal(after.bias, before.bias)
        assert after.weights.dtype == before.weights.dtype
    assert zeroed == sum(int((np.abs(layer.weights) < 0.5).sum()) for layer in network.layers)


def test_pruning_below_zero_changes_nothing() -> None:
    network = random_network(np.random.default_rng(1), [3, 4, 2])
    pruned, zeroed = prune_weights(network, 0.0)
    assert zeroed == 0 and same_weights(network, pruned)


def test_hidden_widths_are_parsed_from_a_comma_list() -> None:
    assert parse_hidden("32, 16") == (32, 16)
    assert parse_hidden("") == ()
    with pytest.raises(TrainingError, match="'x'"):
        parse_hidden("32,x")
    with pytest.raises(TrainingError, match="'0'"):
        parse_hidden("0")


def test_the_paper_recipe_is_the_seed_papers_sgd_schedule_and_options_override_it() -> None:
    paper = recipe_named("paper")
    assert (paper.optimizer, paper.lr, paper.momentum, paper.batch_size) == ("sgd", 0.01, 0.9, 128)
    assert (paper.epochs, paper.lr_step, paper.lr_gamma) == (120, 50, 0.1)
    shorter = recipe_named("paper", epochs=30, lr=None)
    assert shorter.epochs == 30 and shorter.lr == 0.01
    with pytest.raises(TrainingError, match="unknown recipe 'rmsprop'; known: adam, paper"):
        recipe_named("rmsprop")


@pytest.mark.parametrize(
    "names",
    [("x_train", "y_train", "x_test", "y_test"), ("Xtr", "ytr", "Xte", "yte")],
)
def test_a_dataset_may_use_the_train_test_array_names_of_common_files(
    tmp_path: Path, names: tuple[str, str, str, str]
) -> None:
    x_name, y_name, x_test_name, y_test_name = names
    path = write_npz(
        tmp_path / "data.npz",
        **{x_name: np.full((6, 2, 2), 255, dtype=np.uint8), y_name: np.arange(6) % 2,
           x_test_name: np.zeros((3, 2, 2), dtype=np.uint8), y_test_name: np.ones(3, dtype=int)},
    )
    dataset = load_dataset(path)
    assert len(dataset.x_train) == 6 and len(dataset.x_test) == 3 and dataset.features == 4
    assert np.all(dataset.x_train == 1.0) and np.all(dataset.x_test == 0.0)


def test_the_shared_mnist_file_loads_as_60000_training_and_10000_test_images() -> None:
    if not SHARED_MNIST.is_file():
        pytest.skip(f"{SHARED_MNIST} is not present")
    dataset = load_dataset(SHARED_MNIST)
    assert (len(dataset.x_train), len(dataset.x_test), dataset.features) == (60000, 10000, 784)
    assert dataset.classes == 10 and dataset.x_train.max() == 1.0 and dataset.x_train.min() == 0.0


def test_a_missing_dataset_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset not found: .*nowhere\.npz"):
        load_dataset(tmp_path / "nowhere.npz")


def test_a_dataset_without_labels_names_the_missing_array(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "data.npz", x=np.zeros((4, 3)))
    with pytest.raises(DatasetError, match=r"no training arrays found .*found: x"):
        load_dataset(path)


def test_labels_that_do_not_match_the_inputs_are_refused(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "data.npz", x=np.zeros((4, 3)), y=np.zeros(5, dtype=int))
    with pytest.raises(DatasetError, match="1-D array of 4 labels"):
        load_dataset(path)


def test_a_single_array_file_is_not_a_dataset(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((4, 3)))
    with pytest.raises(DatasetError, match=r"not a \.npz archive"):
        load_dataset(path)


def test_a_file_that_is_not_numpy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_text("hello")
    with pytest.raises(DatasetError, match=r"not a readable \.npz"):
        load_dataset(path)


def test_negative_inputs_are_refused(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "data.npz", x=-np.ones((4, 3)), y=np.zeros(4, dtype=int))
    with pytest.raises(DatasetError, match="negative values"):
        load_dataset(path)


def test_image_inputs_are_flattened_and_scaled_into_the_unit_box(tmp_path: Path) -> None:
    x = np.arange(10 * 2 * 3, dtype=np.uint8).reshape(10, 2, 3)
    path = write_npz(tmp_path / "data.npz", x=x, y=np.arange(10) % 3)
    dataset = load_dataset(path)
    assert dataset.features == 6 and dataset.classes == 3
    assert len(dataset.x_train) == 8 and len(dataset.x_test) == 2
    assert max(dataset.x_train.max(), dataset.x_test.max()) == 1.0
    assert "divided by their maximum 59" in dataset.note


def test_a_given_test_split_is_used_as_is(tmp_path: Path) -> None:
    path = write_npz(
        tmp_path / "data.npz", x=np.zeros((6, 2)), y=np.zeros(6, dtype=int),
        x_test=np.ones((3, 2)), y_test=np.ones(3, dtype=int),
    )
    dataset = load_dataset(path)
    assert len(dataset.x_train) == 6 and np.all(dataset.x_test == 1) and dataset.classes == 2


def test_a_test_split_needs_both_arrays(tmp_path: Path) -> None:
    path = write_npz(
        tmp_path / "data.npz", x=np.zeros((6, 2)), y=np.zeros(6, dtype=int), x_test=np.ones((3, 2))
    )
    with pytest.raises(DatasetError, match="'x_test' and 'y_test' must be given together"):
        load_dataset(path)


def test_the_digits_dataset_lies_in_the_unit_box_with_a_fixed_split() -> None:
    pytest.importorskip("sklearn")
    first, second = load_dataset("digits"), load_dataset("digits")
    assert first.features == 64 and first.classes == 10
    assert len(first.x_test) == 359 and len(first.x_train) == 1797 - 359
    assert first.x_train.min() >= 0.0 and first.x_train.max() <= 1.0
    assert np.array_equal(first.y_test, second.y_test)
    assert np.array_equal(first.x_test, second.x_test)


def test_the_train_command_reports_a_bad_dataset_in_one_line_with_exit_code_2(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        command_app(), [str(tmp_path / "out.onnx"), "--dataset", str(tmp_path / "none.npz")]
    )
    assert result.exit_code == 2
    assert "dataset not found" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.onnx").exists()


# --- the bundled models ----------------------------------------------------------------------


def documented_models() -> list[tuple[str, list[int], float]]:
    """(file, layer sizes, test accuracy) from the table in models/README.md."""
    if not MODELS_README.is_file():
        return []
    rows = re.findall(
        r"^\|\s*`?([\w.]+\.onnx)`?\s*\|\s*([\d-]+)\s*\|.*?\|\s*([\d.]+)%\s*\|",
        MODELS_README.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    return [
        (name, [int(size) for size in sizes.split("-")], float(percent) / 100)
        for name, sizes, percent in rows
    ]


def test_every_bundled_model_is_documented() -> None:
    documented = {name for name, _, _ in documented_models()}
    assert documented == {path.name for path in MODELS.glob("*.onnx")}
    assert len(documented) >= 3


@pytest.mark.parametrize(("name", "sizes", "documented_accuracy"), documented_models())
def test_a_bundled_model_has_its_documented_shape_and_test_accuracy(
    name: str, sizes: list[int], documented_accuracy: float
) -> None:
    onnx_import = pytest.importorskip("verify_compress.onnx_import")
    network = onnx_import.load_network(MODELS / name)
    assert [network.input_size, *(layer.outputs for layer in network.layers)] == sizes
    assert [layer.relu for layer in network.layers] == [True] * (len(sizes) - 2) + [False]
    dataset = load_dataset(dataset_of(network.input_size))
    predictions = np.argmax(network.forward(dataset.x_test).output, axis=1)
    assert np.mean(predictions == dataset.y_test) >= documented_accuracy - ACCURACY_SLACK


def dataset_of(input_size: int) -> str | Path:
    """The data set a bundled model was trained on, told by its input size (skip if absent)."""
    if input_size == 784:
        if not SHARED_MNIST.is_file():
            pytest.skip(f"{SHARED_MNIST} is not present")
        return SHARED_MNIST
    pytest.importorskip("sklearn")
    return "digits"


def documented_commands() -> list[list[str]]:
    """The `verify-compress train models/...` command lines in models/README.md, as arguments."""
    if not MODELS_README.is_file():
        return []
    lines = MODELS_README.read_text(encoding="utf-8").splitlines()
    prefix = "verify-compress train models/"
    return [line.split()[2:] for line in lines if line.startswith(prefix)]


def test_the_documented_training_command_reproduces_the_strongly_regularized_model(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    onnx_import = pytest.importorskip("verify_compress.onnx_import")
    if torch.__version__.split("+")[0] != DOCUMENTED_TORCH:
        pytest.skip(f"bundled models were trained with torch {DOCUMENTED_TORCH}")
    [arguments] = [args for args in documented_commands() if args[0].endswith("l1_strong.onnx")]
    bundled = MODELS.parent / arguments[0]
    output = tmp_path / bundled.name
    result = CliRunner().invoke(command_app(), [str(output), *arguments[1:], "--quiet"])
    assert result.exit_code == 0, result.output
    assert same_weights(onnx_import.load_network(output), onnx_import.load_network(bundled))
