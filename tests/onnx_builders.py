"""Small ONNX models built with onnx.helper, and onnxruntime as the reference evaluator.

Used by the importer and exporter tests: `GraphBuilder` assembles a graph node by node;
`run_onnxruntime` evaluates a model on a batch of flattened inputs, one input at a time with
batch size 1 (the importer's view of a graph).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper

ELEMENT_TYPES = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.float64): onnx.TensorProto.DOUBLE,
}


class GraphBuilder:
    """Accumulates nodes and initializers; `model(output)` returns the finished ModelProto."""

    def __init__(
        self,
        input_shape: Sequence[int | str],
        dtype: type = np.float32,
        input_name: str = "x",
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.input_name = input_name
        self.input_shape = list(input_shape)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def constant(self, values: Any, name: str | None = None) -> str:
        """A float initializer in the graph's dtype."""
        array = np.asarray(values, dtype=self.dtype)
        name = name or self.fresh("c")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def int_constant(self, values: Sequence[int], name: str | None = None) -> str:
        name = name or self.fresh("i")
        self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, name: str | None = None,
             **attributes: Any) -> str:
        """Add a node; returns its first output's name."""
        name = name or self.fresh(op.lower())
        output_names = [f"{name}_out{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), output_names, name=name, **attributes))
        return output_names[0]

    def model(self, output: str, opset: int = 17, initializers_as_inputs: bool = False
              ) -> onnx.ModelProto:
        element = ELEMENT_TYPES[self.dtype]
        inputs = [helper.make_tensor_value_info(self.input_name, element, self.input_shape)]
        if initializers_as_inputs:  # the old ONNX style of ACAS Xu
            inputs += [
                helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                for init in self.initializers
            ]
        graph = helper.make_graph(
            self.nodes, "test", inputs,
            [helper.make_tensor_value_info(output, element, None)],
            initializer=self.initializers,
        )
        return helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8
        )


def with_symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose input's leading dimension 0 is symbolic (onnxruntime rejects size 0)."""
    result = copy.deepcopy(model)
    first = result.graph.input[0].type.tensor_type.shape.dim[0]
    if first.HasField("dim_value") and first.dim_value == 0:
        first.dim_param = "batch"
    return result


def run_onnxruntime(model: onnx.ModelProto, inputs: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Outputs (flattened) of `model` on each row of `inputs`, reshaped to `shape` first.

    `shape` is the full input shape onnxruntime expects for one input (batch dim included)."""
    session = onnxruntime.InferenceSession(
        with_symbolic_batch(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    element = np.float32 if model.graph.input[0].type.tensor_type.elem_type == 1 else np.float64
    rows = [
        session.run(None, {name: np.asarray(row, dtype=element).reshape(shape)})[0].reshape(-1)
        for row in inputs
    ]
    return np.array(rows, dtype=np.float64)
