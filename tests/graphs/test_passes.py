"""Graph passes: inlining keeps the outputs, and each pass's contract fails with a message that says why."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx_ir.passes import PostconditionError, PreconditionError

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.errors import ExportError
from hiprune.graphs.passes import AttachSelectFunctionPass, InlineFunctionsPass, StaticShapesPass, ValueNamesPass
from hiprune.graphs.pipelines import tensorrt_ready
from hiprune.runtime import OrtRunner
from hiprune.targets.spine import save_model


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("passes") / "out"
    config = HiPruneConfig(keep=12, alpha=1.0, neighbors="grid")
    return export(ExportRequest(hiprune=config, model=str(tiny_checkpoint(image_size=40)), batch=3, output=out))


def test_inlining_gives_identical_outputs(exported, tmp_path):
    inlined = InlineFunctionsPass()(ir.load(exported.artifact)).model
    assert not inlined.functions and "hiprune" not in inlined.opset_imports
    assert all(node.domain in ("", "ai.onnx") for node in inlined.graph)
    save_model(inlined, tmp_path / "inlined.onnx")
    pixel_values = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(9)).numpy()
    with OrtRunner(exported.artifact) as a, OrtRunner(tmp_path / "inlined.onnx") as b:
        want, got = a.infer({"pixel_values": pixel_values}), b.infer({"pixel_values": pixel_values})
    np.testing.assert_array_equal(got["indices"], want["indices"])
    np.testing.assert_array_equal(got["image_embeds"], want["image_embeds"])


def test_attach_requires_a_select_node(exported):
    inlined = InlineFunctionsPass()(ir.load(exported.artifact)).model
    with pytest.raises(PreconditionError, match="expected at least one hiprune::Select node; found none"):
        AttachSelectFunctionPass()(inlined)


def test_inline_requires_the_function_body(exported):
    model = ir.load(exported.artifact)
    model.functions.clear()
    with pytest.raises(PreconditionError, match="has no model-local function to inline"):
        InlineFunctionsPass()(model)


def test_static_shapes_pass_names_the_dynamic_value(exported):
    model = ir.load(exported.artifact)
    model.graph.inputs[0].shape = ir.Shape(["batch", 3, 40, 40])
    with pytest.raises(PostconditionError, match="'pixel_values' has shape .*batch.*expected static dimensions"):
        StaticShapesPass()(model)


def _rename_first(model, op_type, name):
    node = next(n for n in model.graph if n.op_type == op_type)
    node.outputs[0].name = name
    return node


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("_", r"placeholder name '_' \(output 0 of node '.*' \(MatMul\)\) in the main graph"),
        ("__31", r"placeholder name '__31'"),
        ("", r"an unnamed value \(output 0 of node '.*' \(MatMul\)\)"),
        ("pixel_values", r"duplicate name 'pixel_values' \(2 values\) in the main graph"),
    ],
)
def test_value_names_pass_names_the_planted_offender(exported, name, message):
    model = ir.load(exported.artifact)
    ValueNamesPass()(model)  # the written graph itself holds the contract
    _rename_first(model, "MatMul", name)
    with pytest.raises(ExportError, match=message) as info:
        ValueNamesPass()(model)
    assert "\n" not in str(info.value)


def test_pipeline_fails_on_a_placeholder_in_the_select_body(exported):
    """The defect TensorRT met: a throwaway ``_`` in the function body becomes a main-graph tensor on inlining."""
    model = ir.load(exported.artifact)
    body = next(iter(model.functions.values()))
    next(n for n in body if n.op_type == "TopK").outputs[0].name = "_"
    with pytest.raises(ExportError, match=r"graph contract: .*placeholder name '_'"):
        tensorrt_ready(model, "fp32")


def _proto_bytes(model):
    return ir.serde.serialize_model(model).SerializeToString(deterministic=True)


def test_tensorrt_ready_never_mutates_its_input(exported):
    """Called in either order on one model, each precision gives the same graph and the input stays as it was."""
    first, second = (ir.serde.deserialize_model(onnx.load(exported.artifact)) for _ in range(2))
    original = _proto_bytes(first)
    fp32_then_fp16 = [_proto_bytes(tensorrt_ready(first, p)) for p in ("fp32", "fp16")]
    fp16_then_fp32 = [_proto_bytes(tensorrt_ready(second, p)) for p in ("fp16", "fp32")][::-1]
    assert fp32_then_fp16 == fp16_then_fp32
    assert _proto_bytes(first) == _proto_bytes(second) == original


def test_fp32_island_fails_without_a_select_node(exported):
    from hiprune.graphs.precision import convert_precision

    inlined = InlineFunctionsPass()(ir.load(exported.artifact)).model
    with pytest.raises(ExportError, match="fp32 island: expected a hiprune::Select node .* found none"):
        convert_precision(inlined, "fp16")
