"""ONNX graph passes on onnx-ir models: each a small pass with a contract (requires → call → ensures).

Pipelines are explicit ordered lists built in :mod:`hiprune.graphs.pipelines`.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult, PostconditionError, PreconditionError
from onnx_ir.passes.common import InlinePass

from hiprune.graphs import select_op


def select_nodes(model: ir.Model) -> list[ir.Node]:
    """Every ``hiprune::Select`` node in the main graph."""
    return [n for n in model.graph if n.domain == select_op.DOMAIN and n.op_type == select_op.OP_TYPE]


class AttachSelectFunctionPass(InPlacePass):
    """Gives each ``hiprune::Select`` node its model-local function body and the domain its opset import.

    The exporter emits the node as a call of a registered schema; this pass adds the standard-op body so that
    plain ONNX Runtime (or any runtime) can run it.
    """

    def requires(self, model: ir.Model) -> None:
        if not select_nodes(model):
            raise PreconditionError(
                f"expected at least one {select_op.DOMAIN}::{select_op.OP_TYPE} node; found none "
                "(was the model exported with --no-prune?)"
            )

    def call(self, model: ir.Model) -> PassResult:
        key = (select_op.DOMAIN, select_op.OP_TYPE, "")
        if key in model.functions:
            return PassResult(model, modified=False)
        function = ir.serde.deserialize_function(select_op.function_proto())
        model.functions[function.identifier()] = function
        model.opset_imports[select_op.DOMAIN] = select_op.VERSION
        return PassResult(model, modified=True)

    def ensures(self, model: ir.Model) -> None:
        if (select_op.DOMAIN, select_op.OP_TYPE, "") not in model.functions:
            raise PostconditionError(f"{select_op.DOMAIN}::{select_op.OP_TYPE} has no function body after the pass")


class InlineSelectPass(InPlacePass):
    """Replaces each ``hiprune::Select`` node by its function body (standard ops only) and drops the function.

    The TensorRT-bound form: parsers without the custom domain see only standard ops.
    """

    def requires(self, model: ir.Model) -> None:
        for node in select_nodes(model):
            if (node.domain, node.op_type, node.overload) not in model.functions:
                raise PreconditionError(
                    f"node {node.name!r} ({node.domain}::{node.op_type}) has no model-local function to inline; "
                    "run AttachSelectFunctionPass first"
                )

    def call(self, model: ir.Model) -> PassResult:
        modified = bool(select_nodes(model))
        result = InlinePass()(model)
        model = result.model
        model.opset_imports.pop(select_op.DOMAIN, None)
        return PassResult(model, modified=modified or result.modified)

    def ensures(self, model: ir.Model) -> None:
        left = [n for n in model.graph if n.domain not in ("", "ai.onnx")]
        if left or model.functions:
            what = left[0] if left else next(iter(model.functions))
            raise PostconditionError(f"expected only standard ops and no local functions after inlining; found {what}")


class MetadataPass(InPlacePass):
    """Writes ``metadata_props`` (HiPrune config, source checkpoint, versions)."""

    def __init__(self, props: Mapping[str, str]) -> None:
        super().__init__()
        self.props = dict(props)

    def call(self, model: ir.Model) -> PassResult:
        model.metadata_props.update(self.props)
        return PassResult(model, modified=bool(self.props))


class StaticShapesPass(InPlacePass):
    """Checks that every graph input and output has a fully static shape; changes nothing."""

    def call(self, model: ir.Model) -> PassResult:
        for value in (*model.graph.inputs, *model.graph.outputs):
            shape = value.shape
            if shape is None or not shape.is_static():
                raise PostconditionError(
                    f"graph value {value.name!r} has shape {shape}; expected static dimensions only "
                    "(export with a fixed --batch and image size)"
                )
        return PassResult(model, modified=False)


class FoldConstantsPass(InPlacePass):
    """Constant folding and dead-node removal (onnxscript's optimizer); with static shapes this turns every
    shape computation, and every TopK K, into an initializer."""

    def call(self, model: ir.Model) -> PassResult:
        import onnxscript.optimizer

        before = sum(1 for _ in model.graph)
        onnxscript.optimizer.optimize(model)
        return PassResult(model, modified=sum(1 for _ in model.graph) != before)
