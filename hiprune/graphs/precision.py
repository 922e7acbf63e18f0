"""Mixed precision for strongly typed TensorRT networks: the graph's tensor types *are* the precision.

Everything becomes fp16 (or bf16) except an fp32 island that accuracy needs:
- the selection: ``hiprune::Select`` and the score chains feeding it (score-layer ``QKᵀ`` ``MatMul`` → scaling
  → ``Softmax`` → means → slice), so anchors and registers are ranked on fp32 scores (fp16 logits there are
  the most exposed to overflow with real weights);
- ``LayerNormalization``, whose variance overflows in fp16 on ViT activations (TensorRT warns about exactly
  this and recommends keeping layernorm in fp32);
- for bf16 only, ``Conv`` (the patch embedding): opset 18's Conv has no bf16 type.
Graph inputs and outputs keep fp32 (``pixel_values`` in, ``image_embeds`` out) so callers see one interface.

fp16 conversion is onnxconverter-common's (casts at every island boundary); bf16 is that graph with every
fp16 type, cast and initializer rewritten to bf16.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from hiprune.errors import ExportError
from hiprune.graphs.passes import select_nodes
from hiprune.quiet import quiet

FP16_SMALLEST_SUBNORMAL = 2.0**-24  # smaller magnitudes are clamped to this (the converter's default is 1e-7)
FP32_OPS = {"fp16": ("LayerNormalization",), "bf16": ("LayerNormalization", "Conv")}
SCORE_CHAIN_OPS = ("Slice", "ReduceMean", "Squeeze", "Reshape", "Softmax")
SCORE_LOGIT_OPS = ("Mul", "Div", "MatMul")  # under a score layer's Softmax: the scaling and QKᵀ


def fp32_island(model: ir.Model, fp32_ops: tuple[str, ...]) -> list[str]:
    """Names of the nodes kept in fp32: Select, its score chains down to their QKᵀ, and ``fp32_ops``.

    A pruned graph without a Select node is an error, not an island-free conversion: its scores would silently
    be ranked in fp16.
    """
    selects = select_nodes(model)
    if not selects and model.metadata_props.get("hiprune.prune") != "false":
        raise ExportError(
            "fp32 island: expected a hiprune::Select node to anchor the selection's fp32 island, found none; "
            "convert precision before inlining (graphs.pipelines.tensorrt_ready does)"
        )
    island: list[ir.Node] = []
    for select in selects:
        island.append(select)
        for value in select.inputs:
            island += _upstream(value, SCORE_CHAIN_OPS, "Softmax")
    for softmax in [node for node in island if node.op_type == "Softmax"]:
        island += _upstream(softmax.inputs[0], SCORE_LOGIT_OPS, "MatMul")
    island += [node for node in model.graph if node.op_type in fp32_ops]
    return [node.name for node in island if node.name]


def _upstream(value: ir.Value | None, ops: tuple[str, ...], last: str) -> list[ir.Node]:
    """The chain of ``ops`` producing ``value`` through first inputs, up to and including a ``last`` node."""
    chain: list[ir.Node] = []
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in ops:
        chain.append(node)
        source = node.inputs[0]
        if node.op_type == last or source is None:
            break
        node = source.producer()
    return chain


def convert_precision(model: ir.Model, precision: str) -> ir.Model:
    """Returns ``model`` in ``precision`` (fp32: unchanged) with the fp32 island kept. Run before inlining."""
    if precision == "fp32":
        return model
    from onnxconverter_common import float16

    island = fp32_island(model, FP32_OPS[precision])
    proto = ir.serde.serialize_model(model)
    with quiet():  # one warning per weight below fp16's range otherwise
        converted = float16.convert_float_to_float16(
            proto,
            min_positive_val=FP16_SMALLEST_SUBNORMAL,
            keep_io_types=True,
            node_block_list=island,
            disable_shape_infer=True,
        )
    del proto
    result = ir.serde.deserialize_model(converted)
    if precision == "bf16":
        Float16ToBfloat16Pass()(result)
    return result


class Float16ToBfloat16Pass(InPlacePass):
    """Rewrites every fp16 tensor type, ``Cast(to=FLOAT16)`` and fp16 initializer/constant to bf16."""

    def call(self, model: ir.Model) -> PassResult:
        modified = False
        for name, value in list(model.graph.initializers.items()):
            if value.dtype == ir.DataType.FLOAT16 and value.const_value is not None:
                value.const_value = _to_bf16(value.const_value, name)
                modified = True
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.op_type == "Cast" and node.attributes.get_int("to") == ir.DataType.FLOAT16:
                node.attributes["to"] = ir.AttrInt64("to", ir.DataType.BFLOAT16)
                modified = True
            if node.op_type == "Constant" and "value" in node.attributes:
                tensor = node.attributes["value"].as_tensor()
                if tensor.dtype == ir.DataType.FLOAT16:
                    node.attributes["value"] = ir.AttrTensor("value", _to_bf16(tensor, tensor.name))
                    modified = True
            for maybe in (*node.inputs, *node.outputs):
                if maybe is not None and maybe.dtype == ir.DataType.FLOAT16:
                    maybe.dtype = ir.DataType.BFLOAT16
                    modified = True
        return PassResult(model, modified=modified)


def _to_bf16(tensor: ir.TensorProtocol, name: str | None) -> ir.Tensor:
    array = tensor.numpy().astype(np.float32).astype(ml_dtypes.bfloat16)
    return ir.Tensor(array, name=name)
