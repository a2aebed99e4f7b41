"""Size summary of a network IR: layers, neurons, parameters and connections.

Stage: ONNX -> **IR** -> ... A read-only view of the IR used by `verify-compress inspect` and
by the before/after counts of a compression report. Everything here is plain JSON data.

Counting conventions (the paper's): a connection is a weight that is exactly nonzero; the
parameters of a layer are all its weights plus its biases; neurons are the hidden ReLU units.
"""

from __future__ import annotations

from typing import TypedDict

from .ir import AffineLayer, Network


class LayerSummary(TypedDict):
    inputs: int
    outputs: int
    relu: bool
    connections: int
    parameters: int


class Totals(TypedDict):
    layers: int
    relu_neurons: int
    parameters: int
    connections: int


class NetworkSummary(TypedDict):
    name: str
    input_shape: list[int]
    input_size: int
    output_size: int
    layers: list[LayerSummary]
    totals: Totals
    folded_ops: list[str]


def layer_summary(layer: AffineLayer) -> LayerSummary:
    return {
        "inputs": layer.inputs,
        "outputs": layer.outputs,
        "relu": layer.relu,
        "connections": layer.connections,
        "parameters": int(layer.weights.size + layer.bias.size),
    }


def network_summary(network: Network) -> NetworkSummary:
    """Per-layer and total sizes of `network`, JSON-ready."""
    layers = [layer_summary(layer) for layer in network.layers]
    return {
        "name": network.name,
        "input_shape": [int(d) for d in network.input_shape],
        "input_size": network.input_size,
        "output_size": network.output_size,
        "layers": layers,
        "totals": {
            "layers": len(layers),
            "relu_neurons": sum(layer["outputs"] for layer in layers if layer["relu"]),
            "parameters": sum(layer["parameters"] for layer in layers),
            "connections": sum(layer["connections"] for layer in layers),
        },
        "folded_ops": list(network.folded_ops),
    }
