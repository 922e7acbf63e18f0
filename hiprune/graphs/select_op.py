"""``hiprune::Select``: the ONNX form of the selection, one node carrying a model-local function body.

The body is made of standard ONNX ops only, so any ONNX runtime runs the node as is; a runtime with a native
kernel for ``hiprune::Select`` may replace it, and :class:`~hiprune.graphs.passes.InlineFunctionsPass` turns it
into plain ops (the TensorRT-bound form). The body computes :func:`hiprune.selection.select_static`'s selection
(both are held to the same paper-loop oracle, index for index).

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
    """(B, N) object-layer and deep-layer scores → (B, K) ascending kept indices.

    Every intermediate is a named variable: the names become tensor names in the inlined graph, where TensorRT
    requires them unique (a throwaway ``_`` per TopK broke engine builds).
    """
    zero = op.Constant(value_ints=[0])
    one = op.Constant(value_ints=[1])
    last_axis = op.Constant(value_ints=[-1])
    zero_scalar = op.Constant(value_int=0)
    one_scalar = op.Constant(value_int=1)
    absent = op.Constant(value_int=-1)
    infinity = op.Constant(value_float=float("inf"))
    n = op.Shape(s_deep, start=1, end=2)
    n_scalar = op.Squeeze(n)
    last_position = op.Sub(n_scalar, one_scalar)
    w_scalar = op.Constant(value_int=grid_width)
    w = op.Reshape(w_scalar, one)
    w_minus_1 = op.Sub(w, one)
    a_scalar = op.Constant(value_int=anchors)
    k_scalar = op.Constant(value_int=keep)
    k = op.Reshape(k_scalar, one)
    # anchors: topk of at least one element; when a == 0 every candidate is masked out below
    a = op.Reshape(a_scalar, one)
    a_or_1 = op.Max(a, one)
    a_or_1_scalar = op.Squeeze(a_or_1)
    anchor_scores, anchor_idx = op.TopK(s_obj, a_or_1, axis=-1, largest=1, sorted=1)
    anchor_slots = op.Range(zero_scalar, a_or_1_scalar, one_scalar)
    anchor_slot_live = op.Less(anchor_slots, a_scalar)
    anchor_live = op.Unsqueeze(anchor_slot_live, zero)
    left = op.Sub(anchor_idx, one)
    right = op.Add(anchor_idx, one)
    up = op.Sub(anchor_idx, w)
    down = op.Add(anchor_idx, w)
    cand = op.Concat(anchor_idx, left, right, up, down, axis=1)
    col = op.Mod(anchor_idx, w)
    anchor_in_grid = op.GreaterOrEqual(anchor_idx, zero)
    left_in_grid = op.Greater(col, zero)
    right_in_grid = op.Less(col, w_minus_1)
    up_in_grid = op.GreaterOrEqual(anchor_idx, w)
    down_in_grid = op.Less(down, n)
    in_grid = op.Concat(anchor_in_grid, left_in_grid, right_in_grid, up_in_grid, down_in_grid, axis=1)
    neighbor_mode = op.Constant(value_int=grid_neighbors)
    paper_mode = op.Equal(neighbor_mode, zero_scalar)
    neighbor_kept = op.Or(in_grid, paper_mode)
    cand_live = op.Concat(anchor_live, anchor_live, anchor_live, anchor_live, anchor_live, axis=1)
    live = op.And(cand_live, neighbor_kept)
    cand_clamped = op.Clip(cand, zero_scalar, last_position)
    buffer_idx = op.Where(live, cand_clamped, absent)
    positions = op.Range(zero_scalar, n_scalar, one_scalar)
    buffer_column = op.Unsqueeze(buffer_idx, last_axis)
    hit = op.Equal(buffer_column, positions)
    hits = op.Cast(hit, to=1)
    hit_any = op.ReduceMax(hits, one, keepdims=0)
    in_buffer = op.Cast(hit_any, to=9)
    prio = op.Where(in_buffer, infinity, s_deep)
    kept_prio, kept_by_prio = op.TopK(prio, k, axis=-1, largest=1, sorted=1)
    kept_float = op.Cast(kept_by_prio, to=1)
    kept_ascending, kept_order = op.TopK(kept_float, k, axis=-1, largest=0, sorted=1)
    indices = op.Cast(kept_ascending, to=7)
    return indices


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
