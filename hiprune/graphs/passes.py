"""ONNX graph passes on onnx-ir models: each a small pass with a contract (requires → call → ensures).

Pipelines are explicit ordered lists built in :mod:`hiprune.graphs.pipelines`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult, PostconditionError, PreconditionError
from onnx_ir.passes.common import InlinePass

from hiprune.errors import ExportError
from hiprune.graphs import select_op

PLACEHOLDER_NAME = re.compile(r"_+\d*")  # a script's throwaway variable (`_`, `__31`), not a name


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


class InlineFunctionsPass(InPlacePass):
    """Inlines every model-local function (onnx-ir's ``InlinePass``) and drops the ``hiprune`` opset import.

    The exporter leaves one kind of local function, the ``hiprune::Select`` body, so this is how the Select
    node becomes standard ops: the TensorRT-bound form, for parsers without the custom domain. Requires every
    Select node to have its body; ensures only standard ops and no local functions remain.
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


class OnnxscriptOptimizePass(InPlacePass):
    """Runs onnxscript's whole default optimizer: constant folding, its default rewrite rules, dead-node and
    unused-function removal, constant lifting, initializer deduplication, CSE and name fixes.

    With static shapes this turns every shape computation, and every TopK K, into an initializer (what
    TensorRT's parser needs). The optimizer does not report what it changed, so ``modified`` means "the node
    count changed"; the pipelines here run each pass once and do not read it.
    """

    def call(self, model: ir.Model) -> PassResult:
        import onnxscript.optimizer

        before = sum(1 for _ in model.graph)
        onnxscript.optimizer.optimize(model)
        return PassResult(model, modified=sum(1 for _ in model.graph) != before)


class ValueNamesPass(InPlacePass):
    """Graph contract: every value has a name, no name is a placeholder (``_``), and no name is used twice.

    TensorRT keys its tensors by name (a duplicate fails the engine build deep inside the builder), and a
    placeholder tells a reader of the graph nothing. The main graph with its subgraphs is one scope; each
    local function is its own. Changes nothing; fails with an :class:`ExportError` naming the offenders.
    """

    MAX_LISTED = 5

    def call(self, model: ir.Model) -> PassResult:
        problems: list[str] = []
        scopes: list[tuple[str, ir.Graph | ir.Function]] = [("main graph", model.graph)]
        scopes += [(f"function {f.name}", f) for f in model.functions.values()]
        for scope, graph in scopes:
            problems += [f"{issue} in the {scope}" for issue in _name_problems(_scope_values(graph))]
        if problems:
            shown = "; ".join(problems[: self.MAX_LISTED])
            more = f" (and {len(problems) - self.MAX_LISTED} more)" if len(problems) > self.MAX_LISTED else ""
            raise ExportError(
                f"graph contract: tensor names must be unique and meaningful; found {shown}{more}; "
                "name every value in the code that builds the graph"
            )
        return PassResult(model, modified=False)


def _scope_values(graph: ir.Graph | ir.Function) -> Iterator[tuple[ir.Value, str]]:
    """Each value defined in ``graph`` (inputs, initializers, node outputs, subgraphs too) with where it comes from."""
    for value in graph.inputs:
        yield value, "a graph input"
    if isinstance(graph, ir.Graph):
        for value in graph.initializers.values():
            yield value, "an initializer"
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for position, value in enumerate(node.outputs):
            yield value, f"output {position} of node {node.name!r} ({node.op_type})"


def _name_problems(values: Iterator[tuple[ir.Value, str]]) -> list[str]:
    counts: Counter[str] = Counter()
    problems, seen = [], set()
    for value, origin in values:
        if id(value) in seen:  # an initializer that is also a graph input is one value
            continue
        seen.add(id(value))
        if not value.name:
            problems.append(f"an unnamed value ({origin})")
        elif PLACEHOLDER_NAME.fullmatch(value.name):
            problems.append(f"placeholder name {value.name!r} ({origin})")
        else:
            counts[value.name] += 1
    problems += [f"duplicate name {name!r} ({n} values)" for name, n in counts.items() if n > 1]
    return problems
