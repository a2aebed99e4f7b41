"""The network IR: a sequence of affine layers, each optionally followed by a ReLU.

Stage: ONNX -> **IR** -> domain and bounds -> ... Every later stage reads only this IR.

Layer l computes the pre-activation g_l = W_l h_{l-1} + b_l with h_0 = x, and
h_l = relu(g_l) if `relu` else g_l. Hidden neurons are those of layers with a ReLU; they are
addressed as `Neuron(layer, index)`.

Weights keep the dtype they were stored in (float32 or float64), or are exact rationals (object
arrays of `Fraction`) after compression. Two semantics are offered:
- `forward`: float64 batch evaluation, for speed (sampling, hints, onnxruntime comparisons);
- `evaluate_exact`: exact rational evaluation of one input, the reference semantics. Stored
  floats are read as the exact rationals they are.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import NetworkError
from .exact import RationalArray
from .status import Neuron

FloatArray = npt.NDArray[np.float64]
_ALLOWED_KINDS = ("f", "O")


def _check_values(name: str, array: npt.NDArray[Any]) -> None:
    if array.dtype.kind not in _ALLOWED_KINDS:
        raise NetworkError(f"{name}: dtype {array.dtype} is not float32, float64 or exact rational")
    if array.dtype.kind == "O":
        if not all(isinstance(v, (Fraction, int)) for v in array.reshape(-1)):
            raise NetworkError(f"{name}: object arrays must hold Fractions")
    elif not np.all(np.isfinite(array)):
        raise NetworkError(f"{name}: contains NaN or infinite values")


@dataclasses.dataclass(frozen=True, eq=False)
class AffineLayer:
    """g = weights @ h + bias, followed by a ReLU when `relu` is true."""

    weights: npt.NDArray[Any]
    bias: npt.NDArray[Any]
    relu: bool

    def __post_init__(self) -> None:
        if self.weights.ndim != 2:
            raise NetworkError(f"weights must be 2-D, got shape {self.weights.shape}")
        if self.bias.shape != (self.weights.shape[0],):
            raise NetworkError(
                f"bias shape {self.bias.shape} does not match {self.weights.shape[0]} outputs"
            )
        _check_values("weights", self.weights)
        _check_values("bias", self.bias)
        self.weights.setflags(write=False)
        self.bias.setflags(write=False)

    @property
    def inputs(self) -> int:
        return int(self.weights.shape[1])

    @property
    def outputs(self) -> int:
        return int(self.weights.shape[0])

    @property
    def is_exact_rational(self) -> bool:
        return self.weights.dtype.kind == "O" or self.bias.dtype.kind == "O"

    @property
    def connections(self) -> int:
        """Nonzero weights (exactly zero entries are not connections)."""
        return int(sum(1 for w in self.weights.reshape(-1) if w != 0))

    @functools.cached_property
    def float_weights(self) -> FloatArray:
        return np.asarray(self.weights, dtype=np.float64)

    @functools.cached_property
    def float_bias(self) -> FloatArray:
        return np.asarray(self.bias, dtype=np.float64)

    @functools.cached_property
    def exact_weights(self) -> RationalArray:
        return RationalArray.from_array(self.weights)

    @functools.cached_property
    def exact_bias(self) -> RationalArray:
        return RationalArray.from_array(self.bias)


@dataclasses.dataclass(frozen=True)
class Forward:
    """A float64 batch evaluation: pre_activations[l] has shape (batch, outputs of layer l)."""

    pre_activations: list[FloatArray]
    output: FloatArray


@dataclasses.dataclass(frozen=True)
class ExactForward:
    """An exact evaluation of one input: pre_activations[l] is layer l's exact g_l."""

    pre_activations: list[RationalArray]
    output: RationalArray

    def sign(self, neuron: Neuron) -> int:
        """Exact sign of a neuron's pre-activation: -1, 0 or +1."""
        value = self.pre_activations[neuron.layer].numerators[neuron.index]
        return int((value > 0) - (value < 0))

    def value(self, neuron: Neuron) -> Fraction:
        layer = self.pre_activations[neuron.layer]
        return Fraction(int(layer.numerators[neuron.index]), layer.denominator)


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward ReLU network as a chain of affine layers.

    `input_shape` is the shape of one input as the ONNX graph declares it (without the batch
    dimension); inputs are flattened in C order. `folded_ops` records the ONNX ops that the
    importer folded into the affine layers (for `inspect`).
    """

    layers: tuple[AffineLayer, ...]
    input_shape: tuple[int, ...] = ()
    folded_ops: tuple[str, ...] = ()
    name: str = "network"

    def __post_init__(self) -> None:
        if not self.layers:
            raise NetworkError("a network needs at least one affine layer")
        for position, (before, after) in enumerate(zip(self.layers, self.layers[1:], strict=False)):
            if before.outputs != after.inputs:
                raise NetworkError(
                    f"layer {position} has {before.outputs} outputs but layer {position + 1} "
                    f"expects {after.inputs} inputs"
                )
        if not self.input_shape:
            object.__setattr__(self, "input_shape", (self.layers[0].inputs,))
        if int(np.prod(self.input_shape)) != self.layers[0].inputs:
            raise NetworkError(
                f"input shape {self.input_shape} does not match {self.layers[0].inputs} inputs"
            )

    @property
    def rounded_folds(self) -> list[str]:
        """The folded ONNX ops whose fold is float64-rounded, not exact: every claim then holds
        for the rounded network, not for the ONNX file's exact semantics."""
        return [op for op in self.folded_ops if "rounded" in op]

    @property
    def input_size(self) -> int:
        return self.layers[0].inputs

    @property
    def output_size(self) -> int:
        return self.layers[-1].outputs

    @property
    def dtype(self) -> np.dtype[Any]:
        """The float dtype the weights were stored in (float64 for exact rational layers)."""
        kinds = {layer.weights.dtype for layer in self.layers if layer.weights.dtype.kind == "f"}
        return np.dtype(np.float32) if kinds == {np.dtype(np.float32)} else np.dtype(np.float64)

    def hidden_neurons(self) -> list[Neuron]:
        """Every neuron followed by a ReLU, in layer order."""
        return [
            Neuron(layer_index, i)
            for layer_index, layer in enumerate(self.layers)
            if layer.relu
            for i in range(layer.outputs)
        ]

    def forward(self, inputs: npt.ArrayLike) -> Forward:
        """Float64 evaluation of a batch (or a single input) of flattened inputs."""
        values = np.asarray(inputs, dtype=np.float64)
        if values.ndim == 1:
            values = values[None, :]
        if values.shape[1] != self.input_size:
            raise NetworkError(
                f"expected inputs of length {self.input_size}, got {values.shape[1]}"
            )
        pre_activations = []
        for layer in self.layers:
            g = values @ layer.float_weights.T + layer.float_bias
            pre_activations.append(g)
            values = np.maximum(g, 0.0) if layer.relu else g
        return Forward(pre_activations, values)

    def evaluate_exact(self, point: npt.ArrayLike | RationalArray) -> ExactForward:
        """Exact rational evaluation of one input (floats read as exact rationals)."""
        values = point if isinstance(point, RationalArray) else RationalArray.from_array(point)
        if values.shape != (self.input_size,):
            raise NetworkError(f"expected an input of length {self.input_size}, got {values.shape}")
        pre_activations = []
        for layer in self.layers:
            g = layer.exact_weights.matmul(values).add(layer.exact_bias)
            pre_activations.append(g)
            values = g.relu() if layer.relu else g
        return ExactForward(pre_activations, values)

    def with_layers(self, layers: Sequence[AffineLayer], name: str | None = None) -> Network:
        return Network(tuple(layers), self.input_shape, self.folded_ops, name or self.name)
