"""What TensorRT's ONNX parser takes without plugins, as a table, and a pass that holds a graph to it.

The table follows onnx-tensorrt's ``docs/operators.md`` for TensorRT 10.x (the parser in JetPack 6.1+ and
current x86 releases): per op, the types its main (first) input may have and the inputs that must be
constants (initializers). Ops that the parser lacks or that make output shapes data-dependent are listed with
the reason. Only the ops a ViT encoder + HiPrune selection needs (and the usual offenders) are tabulated:
an op that is not in the table fails the check until someone checks it and adds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from hiprune.errors import ExportError

D = ir.DataType
FLOATS = frozenset({D.FLOAT, D.FLOAT16, D.BFLOAT16})
INTS = frozenset({D.INT32, D.INT64})
NUMERIC = FLOATS | INTS
ANY = NUMERIC | {D.BOOL, D.INT8, D.UINT8}
MAX_TOPK_K = 3840  # ITopKLayer's largest K


@dataclasses.dataclass(frozen=True)
class OpRule:
    """One row of the table.

    Attributes:
        types: allowed types of input 0 (the tensor the op computes on).
        constant_inputs: input positions that must be initializers or Constant outputs.
        check: extra constraint; returns the reason a node violates it, or None.
    """

    types: frozenset[ir.DataType]
    constant_inputs: tuple[int, ...] = ()
    check: Callable[[ir.Node], str | None] | None = None


def _topk_k(node: ir.Node) -> str | None:
    k = _constant(node.inputs[1])
    if k is None:
        return None  # reported by constant_inputs
    value = int(np.asarray(k).reshape(-1)[0])
    if value > MAX_TOPK_K:
        return f"K = {value} exceeds TensorRT's TopK limit of {MAX_TOPK_K}"
    return None


def _clip_bounds(node: ir.Node) -> str | None:
    for value in node.inputs[1:]:
        if value is not None and _constant(value) is None:
            return "Clip's min/max must be initializers"
    return None


SUPPORTED: dict[str, OpRule] = {
    **{op: OpRule(NUMERIC) for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Mod", "Neg", "Abs")},
    **{op: OpRule(NUMERIC) for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")},
    **{op: OpRule(frozenset({D.BOOL})) for op in ("And", "Or", "Not", "Xor")},
    **{op: OpRule(FLOATS) for op in ("Erf", "Sigmoid", "Tanh", "Exp", "Sqrt", "Pow", "Relu", "Gelu", "Softmax")},
    **{op: OpRule(ANY) for op in ("Reshape", "Transpose", "Concat", "Identity", "Expand", "Shape", "Where")},
    **{op: OpRule(ANY, constant_inputs=(1,)) for op in ("Unsqueeze", "Squeeze")},
    "Slice": OpRule(ANY, constant_inputs=(3,)),
    "Cast": OpRule(ANY),
    "Constant": OpRule(ANY),
    "Gather": OpRule(ANY),
    "GatherElements": OpRule(ANY),
    "Range": OpRule(INTS | FLOATS),
    "Clip": OpRule(NUMERIC, check=_clip_bounds),
    "MatMul": OpRule(FLOATS),
    "Gemm": OpRule(FLOATS),
    "Conv": OpRule(FLOATS, constant_inputs=(1,)),
    "LayerNormalization": OpRule(FLOATS, constant_inputs=(1, 2)),
    **{op: OpRule(FLOATS | INTS) for op in ("ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin")},
    "TopK": OpRule(FLOATS, constant_inputs=(1,), check=_topk_k),
}

UNSUPPORTED: dict[str, str] = {
    "NonZero": "output shape depends on the data (no static-shape form)",
    "Unique": "output shape depends on the data and the parser has no Unique",
    "Compress": "masked selection: output shape depends on the data",
    "NonMaxSuppression": "output shape depends on the data",
    "Loop": "control flow; the HiPrune graphs must be straight-line",
    "If": "control flow; the HiPrune graphs must be straight-line",
    "Scan": "control flow; the HiPrune graphs must be straight-line",
}


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None


def node_violation(node: ir.Node) -> str | None:
    """Why TensorRT's parser would reject ``node``, or None."""
    if node.domain not in ("", "ai.onnx"):
        return f"custom domain {node.domain!r} needs a plugin; inline it (InlineFunctionsPass)"
    if node.op_type in UNSUPPORTED:
        return UNSUPPORTED[node.op_type]
    rule = SUPPORTED.get(node.op_type)
    if rule is None:
        return "not in the TensorRT parser support table (hiprune/graphs/tensorrt_compat.py)"
    first = node.inputs[0] if node.inputs else None
    if first is not None and first.dtype is not None and first.dtype not in rule.types:
        allowed = ", ".join(sorted(t.name for t in rule.types))
        return f"input type {first.dtype.name} is not one TensorRT takes here ({allowed})"
    for position in rule.constant_inputs:
        operand = node.inputs[position] if position < len(node.inputs) else None
        if operand is not None and _constant(operand) is None:
            return f"input {position} ({operand.name!r}) must be a constant initializer, found a computed value"
    for value in node.outputs:
        if value.shape is not None and not value.shape.is_static():
            return f"output {value.name!r} has non-static shape {value.shape}"
    return rule.check(node) if rule.check else None


class TensorRTCompatibilityPass(InPlacePass):
    """Fails on the first node TensorRT's ONNX parser would reject, naming the node, its op and the reason.

    Also requires static shapes on every graph input and output. Changes nothing. Given a ``findings`` list,
    it collects every objection there instead of failing (where a real parser is at hand to decide).
    """

    def __init__(self, findings: list[str] | None = None) -> None:
        super().__init__()
        self.findings = findings

    def call(self, model: ir.Model) -> PassResult:
        for value in (*model.graph.inputs, *model.graph.outputs):
            if value.shape is None or not value.shape.is_static():
                raise ExportError(
                    f"graph value {value.name!r} has shape {value.shape}; TensorRT bundles need static shapes"
                )
        for node in model.graph:
            reason = node_violation(node)
            if reason is None:
                continue
            message = f"TensorRT compatibility: node {node.name!r} ({node.op_type}): {reason}"
            if self.findings is None:
                raise ExportError(message)
            self.findings.append(message)
        return PassResult(model, modified=False)
