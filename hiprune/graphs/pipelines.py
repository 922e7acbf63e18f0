"""The ordered pass lists the targets run. Each entry says why it sits where it does."""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir
from onnx_ir.passes import PassManager
from onnx_ir.passes.common import CheckerPass, ShapeInferencePass

from hiprune.errors import HiPruneError
from hiprune.graphs.passes import (
    AttachSelectFunctionPass,
    InlineFunctionsPass,
    MetadataPass,
    StaticShapesPass,
    ValueNamesPass,
    select_nodes,
)


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.Model:
    """Runs ``passes`` in order; a pass's own :class:`HiPruneError` surfaces as itself, not wrapped by onnx-ir."""
    try:
        return PassManager(passes)(model).model
    except ir.passes.PassError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, HiPruneError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def finalize_onnx(model: ir.Model, metadata: Mapping[str, str]) -> ir.Model:
    """Exporter output → the ONNX target's artifact, checked."""
    passes: list[ir.passes.PassBase] = []
    if select_nodes(model):
        passes.append(AttachSelectFunctionPass())  # before checking: the checker must see the body
    passes += [
        MetadataPass(metadata),  # provenance travels with the file
        ShapeInferencePass(),  # fills intermediate shapes; strict, so a bad graph fails here, not on device
        CheckerPass(full_check=True),  # onnx checker incl. the function body and types
        StaticShapesPass(),  # the contract users rely on (fixed batch and image size)
        ValueNamesPass(),  # last: unique, meaningful tensor names in exactly the graph that is written
    ]
    return run_passes(passes, model)


def tensorrt_ready(model: ir.Model, precision: str, op_table_findings: list[str] | None = None) -> ir.Model:
    """A finalized model → what TensorRT's parser builds as a strongly typed network, checked against its table.

    ``model`` is left as it was (the passes run on a clone that shares its weights). With ``op_table_findings``
    the op table's objections are collected there instead of raised: the caller has a real parser to decide.
    """
    from hiprune.graphs.passes import OnnxscriptOptimizePass
    from hiprune.graphs.precision import convert_precision
    from hiprune.graphs.tensorrt_compat import TensorRTCompatibilityPass

    model = convert_precision(model.clone(), precision)  # first: the fp32 island is found by the Select node
    passes = [
        InlineFunctionsPass(),  # no custom domain: the parser would need a plugin
        OnnxscriptOptimizePass(),  # static shapes fold Shape/Range away; TopK's K becomes an initializer
        ShapeInferencePass(),
        CheckerPass(full_check=True),
        ValueNamesPass(),  # TensorRT keys tensors by name: a duplicate fails the engine build
        TensorRTCompatibilityPass(op_table_findings),  # last: the fast pre-check of exactly the graph that ships
    ]
    return run_passes(passes, model)
