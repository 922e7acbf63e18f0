"""The ONNX ``hiprune::Select`` function body on ONNX Runtime against the paper-loop oracle."""

from __future__ import annotations

import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from oracle import paper_select

from hiprune.config import anchor_count
from hiprune.graphs import select_op


def select_model(batch: int, n: int, keep: int, anchors: int, width: int, grid: bool) -> bytes:
    """A model holding one Select node (with its local function), as exported graphs do."""
    node = onnx.helper.make_node(
        select_op.OP_TYPE,
        ["s_obj", "s_deep"],
        ["indices"],
        domain=select_op.DOMAIN,
        keep=keep,
        anchors=anchors,
        grid_width=width,
        grid_neighbors=int(grid),
    )
    graph = onnx.helper.make_graph(
        [node],
        "select",
        [onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [batch, n]) for x in ("s_obj", "s_deep")],
        [onnx.helper.make_tensor_value_info("indices", onnx.TensorProto.INT64, [batch, keep])],
    )
    model = onnx.helper.make_model(
        graph,
        functions=[select_op.function_proto()],
        opset_imports=[onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid(select_op.DOMAIN, select_op.VERSION)],
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@pytest.mark.parametrize("neighbors", ["paper", "grid"])
def test_function_body_matches_paper_loop(neighbors):
    rng, gen = random.Random(neighbors), torch.Generator().manual_seed(3)
    checked = 0
    for _ in range(60):
        width, height = rng.choice([(3, 3), (4, 5), (7, 7), (24, 24)])
        n = width * height
        keep = rng.randint(1, n)
        alpha = rng.choice([0.0, 0.1, 0.3, 1.0])
        while 5 * anchor_count(keep, alpha) > keep:
            alpha /= 2
        batch = rng.choice([1, 3])
        session = ort.InferenceSession(
            select_model(batch, n, keep, anchor_count(keep, alpha), width, neighbors == "grid"),
            providers=["CPUExecutionProvider"],
        )
        for ties in (False, True):
            s_obj, s_deep = torch.rand(2, batch, n, generator=gen)
            if ties:
                s_obj, s_deep = (s_obj * 3).floor(), (s_deep * 3).floor()
            (got,) = session.run(None, {"s_obj": s_obj.numpy(), "s_deep": s_deep.numpy()})
            want = paper_select(s_obj, s_deep, keep, alpha, width, neighbors).numpy()
            np.testing.assert_array_equal(got, want, err_msg=f"n={n} w={width} keep={keep} alpha={alpha}")
            checked += batch
    assert checked >= 200


def test_function_has_only_standard_ops():
    body = select_op.function_proto()
    assert {n.domain for n in body.node} <= {""}
    assert list(body.attribute) == list(select_op.ATTRIBUTES)
