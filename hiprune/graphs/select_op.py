"""``hiprune::Select``: the ONNX form of the selection, one node carrying a model-local function body.

The body is made of standard ONNX ops only, so any ONNX runtime runs the node as is; a runtime with a native
kernel for ``hiprune::Select`` may replace it, and :class:`~hiprune.graphs.passes.InlineSelectPass` turns it
into plain ops (the TensorRT-bound form). The body mirrors :func:`hiprune.selection.select_static` op for op.

Attributes:
    keep: K, the number of kept tokens per image.
    anchors: a = round(K * alpha / 5); 0 disables anchors and buffers.
    grid_width: W, the patch grid's width.
    grid_neighbors: 0 for the reference code's flat-index neighbours (wrap + clamp), 1 for true 2-D neighbours.
"""

from __future__ import annotations

import onnx
import onnxscript
from onnxscript import FLOAT, INT64
from onnxscript import opset18 as op

DOMAIN = "hiprune"
VERSION = 1
OP_TYPE = "Select"
ATTRIBUTES = ("keep", "anchors", "grid_width", "grid_neighbors")

select_opset = onnxscript.values.Opset(DOMAIN, VERSION)


@onnxscript.script(select_opset, default_opset=op)
def Select(s_obj: FLOAT, s_deep: FLOAT, keep: int, anchors: int, grid_width: int, grid_neighbors: int) -> INT64:
    """(B, N) object-layer and deep-layer scores → (B, K) ascending kept indices."""
    zero = op.Constant(value_ints=[0])
    one = op.Constant(value_ints=[1])
    n = op.Shape(s_deep, start=1, end=2)
    n_minus_1 = op.Sub(n, one)
    w = op.Reshape(op.Constant(value_int=grid_width), one)
    a = op.Reshape(op.Constant(value_int=anchors), one)
    k = op.Reshape(op.Constant(value_int=keep), one)
    # anchors: topk of at least one element; when a == 0 every candidate is masked out below
    a_or_1 = op.Max(a, one)
    _, anchor_idx = op.TopK(s_obj, a_or_1, axis=-1, largest=1, sorted=1)
    anchor_live = op.Less(op.Range(op.Squeeze(zero), op.Squeeze(a_or_1), op.Squeeze(one)), op.Squeeze(a))
    anchor_live = op.Unsqueeze(anchor_live, zero)
    left = op.Sub(anchor_idx, one)
    right = op.Add(anchor_idx, one)
    up = op.Sub(anchor_idx, w)
    down = op.Add(anchor_idx, w)
    cand = op.Concat(anchor_idx, left, right, up, down, axis=1)
    col = op.Mod(anchor_idx, w)
    in_grid = op.Concat(
        op.GreaterOrEqual(anchor_idx, zero),
        op.Greater(col, zero),
        op.Less(col, op.Sub(w, one)),
        op.GreaterOrEqual(anchor_idx, w),
        op.Less(down, n),
        axis=1,
    )
    paper_mode = op.Equal(op.Constant(value_int=grid_neighbors), op.Constant(value_int=0))
    live = op.And(
        op.Concat(anchor_live, anchor_live, anchor_live, anchor_live, anchor_live, axis=1), op.Or(in_grid, paper_mode)
    )
    cand = op.Where(live, op.Clip(cand, op.Squeeze(zero), op.Squeeze(n_minus_1)), op.Constant(value_int=-1))
    positions = op.Range(op.Squeeze(zero), op.Squeeze(n), op.Squeeze(one))
    hits = op.Cast(op.Equal(op.Unsqueeze(cand, op.Constant(value_ints=[-1])), positions), to=1)
    in_buffer = op.Cast(op.ReduceMax(hits, one, keepdims=0), to=9)
    prio = op.Where(in_buffer, op.Constant(value_float=float("inf")), s_deep)
    _, top = op.TopK(prio, k, axis=-1, largest=1, sorted=1)
    ascending, _ = op.TopK(op.Cast(top, to=1), k, axis=-1, largest=0, sorted=1)
    return op.Cast(ascending, to=7)


def function_proto() -> onnx.FunctionProto:
    """The body as a model-local function, ready to append to ``ModelProto.functions``."""
    return Select.to_function_proto()


def _register_schema() -> None:
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    schema = onnx.defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        VERSION,
        doc="HiPrune static-budget token selection: (B, N) scores -> (B, K) ascending int64 indices.",
        inputs=[
            onnx.defs.OpSchema.FormalParameter("s_obj", "T"),
            onnx.defs.OpSchema.FormalParameter("s_deep", "T"),
        ],
        outputs=[onnx.defs.OpSchema.FormalParameter("indices", "tensor(int64)")],
        type_constraints=[("T", ["tensor(float)"], "score type")],
        attributes=[onnx.defs.OpSchema.Attribute(name, onnx.defs.OpSchema.AttrType.INT, "") for name in ATTRIBUTES],
    )
    onnx.defs.register_schema(schema)


_register_schema()
