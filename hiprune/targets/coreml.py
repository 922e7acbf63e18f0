"""``--target coreml``: ``model.mlpackage`` (mlprogram) for Apple Silicon apps, selection lowered to MIL ops.

torch.export → ``hiprune::select`` decomposed to topk/scatter/gather → coremltools (mlprogram) with fixed
shapes (flexible shapes keep a model off the Neural Engine). Outputs: ``image_embeds`` in the requested
precision, ``indices`` int32 (Core ML has no int64 outputs). In an fp16 package the score chain (the score
layers' logits, softmax, the means over heads and queries, and the selection's topk) stays fp32: fp16 scores
collapse into few distinct values, and the kept set would then hinge on Core ML's tie-breaking. Conversion runs
anywhere coremltools installs; predictions need macOS, so on Linux the decomposed program is run against PyTorch
and the package's spec, dtypes and MIL program are checked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from hiprune import __version__
from hiprune.backends import coreml_predict_missing, coremltools_missing
from hiprune.contract import IMAGE_EMBEDS, INDICES, PIXEL_VALUES, IOContract
from hiprune.errors import BackendUnavailableError, ExportError
from hiprune.export.coreml_export import export_for_coreml
from hiprune.quiet import quiet
from hiprune.runtime.compare import TOLERANCES, Comparison, compare_outputs
from hiprune.runtime.coreml_runner import METADATA_COMPUTE_UNITS, CoreMLRunner, compute_unit
from hiprune.targets.base import BuildJob, BuildOutput, Target
from hiprune.targets.spine import REFERENCE_TOLERANCE, reference_outputs

PACKAGE = "model.mlpackage"
DESCRIPTIONS = {
    PIXEL_VALUES: "Image(s) resized and normalized by the checkpoint's image processor, float32 (B, 3, H, W)",
    IMAGE_EMBEDS: "The K kept visual tokens, projected into the language model's embedding space (B, K, D)",
    INDICES: "Raster-order indices (ascending) of the kept patch tokens, int32 (B, K)",
}


class CoreMLTarget(Target):
    name: ClassVar[str] = "coreml"

    def check_available(self) -> None:
        if (missing := coremltools_missing()) is not None:
            raise BackendUnavailableError(f"--target coreml needs coremltools: {missing}")
        with quiet("coremltools"):  # its first import prints warnings about torch versions and macOS-only proxies
            import coremltools  # noqa: F401

    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        with job.steps.step("torch.export, hiprune::select decomposed to topk/scatter/gather"):
            program = export_for_coreml(job.encoder, job.batch)
        with job.steps.step("Checking the decomposed program against PyTorch"):
            decomposed = check_program(job, program)
        if not decomposed.ok:
            raise ExportError(f"the decomposed program disagrees with PyTorch: {decomposed.describe()}")
        precision, target = self.settings["precision"], self.settings["min_target"]
        with job.steps.step(f"Converting with coremltools (mlprogram, {precision}, {target})"):
            mlmodel = self._convert(program, job)
        with job.steps.step(f"Saving {PACKAGE}"):
            mlmodel.save(str(stage / PACKAGE))
        io = package_contract(job.io, precision)
        with job.steps.step("Checking the saved package (spec, shapes, MIL ops)"):
            ops = check_package(stage / PACKAGE, io, target)
        return self._output(ops, decomposed, self._predict(job, io, stage), io)

    def _output(
        self, ops: dict[str, Any], decomposed: Comparison, prediction: Comparison | str, io: IOContract
    ) -> BuildOutput:
        """The summary's check is Core ML's own predictions where they ran, else (labelled so) the decomposed
        program's."""
        details: dict[str, Any] = {
            **self.settings,
            **ops,
            "decomposed_program_check": dataclasses.asdict(decomposed),
            "prediction": prediction if isinstance(prediction, str) else dataclasses.asdict(prediction),
        }
        if isinstance(prediction, Comparison):
            return BuildOutput(PACKAGE, details, prediction, io=io, comparison_label="Core ML vs PyTorch")
        label = "decomposed program vs PyTorch (Core ML predictions need macOS)"
        return BuildOutput(PACKAGE, details, decomposed, self._note(), io=io, comparison_label=label)

    def _convert(self, program: torch.export.ExportedProgram, job: BuildJob) -> Any:
        import coremltools as ct

        io = package_contract(job.io, self.settings["precision"])
        with quiet("coremltools"):
            mlmodel = ct.convert(
                program,
                inputs=[ct.TensorType(name=t.name, shape=t.shape, dtype=np.dtype(t.dtype).type) for t in io.inputs],
                outputs=[ct.TensorType(name=t.name, dtype=np.dtype(t.dtype).type) for t in io.outputs],
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, self.settings["min_target"]),
                compute_precision=_compute_precision(self.settings["precision"]),
                compute_units=compute_unit(self.settings["compute_units"]),
            )
        mlmodel.short_description = f"HiPrune-pruned vision encoder + projector ({job.source})"
        mlmodel.version = __version__
        mlmodel.author = "hiprune-export"
        for info in io.inputs:
            mlmodel.input_description[info.name] = DESCRIPTIONS[info.name]
        for info in io.outputs:
            mlmodel.output_description[info.name] = DESCRIPTIONS[info.name]
        mlmodel.user_defined_metadata.update({**job.metadata, METADATA_COMPUTE_UNITS: self.settings["compute_units"]})
        return mlmodel

    def _predict(self, job: BuildJob, io: IOContract, stage: Path) -> Comparison | str:
        missing = coreml_predict_missing()
        if missing is not None:
            return f"not run: {missing}"
        pixel_values, reference = reference_outputs(job)
        with CoreMLRunner(stage / PACKAGE, contract=io) as runner:
            actual = runner.infer(io.feed(pixel_values))
        precision = self.settings["precision"]
        what = f"{PACKAGE} ({precision}) on Core ML vs PyTorch"
        return compare_outputs(reference, actual, TOLERANCES[("coreml", precision)], what=what)

    @staticmethod
    def _note() -> str | None:
        if coreml_predict_missing() is None:
            return None
        return (
            "Core ML predictions need macOS: the package was converted and its spec, shapes, dtypes and MIL ops "
            "checked here; the decomposed torch program (what coremltools converted) was run against PyTorch, "
            "the package itself was not run."
        )


def package_contract(io: IOContract, precision: str) -> IOContract:
    """The package's outputs: embeds in the requested precision, indices int32 (Core ML has no int64 outputs)."""
    return io.with_dtypes(embeds="float16" if precision == "fp16" else "float32", indices="int32")


def _compute_precision(precision: str) -> Any:
    """fp32, or fp16 everywhere except the score chain (see :func:`score_chain`)."""
    import coremltools as ct

    if precision != "fp16":
        return ct.precision.FLOAT32
    chain: set[str] = set()

    def to_fp16(op: Any) -> bool:
        if not chain:
            chain.update(score_chain(op.enclosing_block))
        return op.name not in chain

    return ct.transform.FP16ComputePrecision(op_selector=to_fp16)


SCORE_CHAIN_STOPS = ("linear", "conv", "layer_norm")  # the trunk proper: never pulled into the fp32 chain


def score_chain(block: Any) -> set[str]:
    """Names of the MIL ops that compute what ``topk`` ranks: walked back from every topk to the softmaxes, plus
    the logits (scaling and QKᵀ matmul) that feed those softmaxes."""
    chain: set[str] = set()
    stack = [op for op in block.operations if op.op_type == "topk"]
    while stack:
        op = stack.pop()
        if op.name in chain or op.op_type in SCORE_CHAIN_STOPS:
            continue
        chain.add(op.name)
        producers = [v.op for v in op.get_flattened_inputs() if v.op is not None and v.op.op_type != "const"]
        if op.op_type == "softmax":
            chain.update(_logit_ops(producers))
        else:
            stack.extend(producers)
    return chain


def _logit_ops(producers: list[Any]) -> set[str]:
    """The scaling and QKᵀ matmul right before a score softmax (fp16 logits are the first to overflow)."""
    names: set[str] = set()
    while len(producers) == 1 and producers[0].op_type in ("mul", "real_div", "matmul"):
        op = producers[0]
        names.add(op.name)
        if op.op_type == "matmul":
            break
        producers = [v.op for v in op.get_flattened_inputs() if v.op is not None and v.op.op_type != "const"]
    return names


def check_program(job: BuildJob, program: torch.export.ExportedProgram) -> Comparison:
    """Runs the exact program handed to coremltools and compares it with the module using the custom op."""
    pixel_values, reference = reference_outputs(job)
    with torch.no_grad():
        embeds, indices = program.module()(torch.from_numpy(pixel_values))
    what = "decomposed torch program (what coremltools converts) vs PyTorch"
    actual = job.io.name_outputs(embeds.numpy(), indices.numpy())
    return compare_outputs(reference, actual, REFERENCE_TOLERANCE, what=what)


def check_package(package: Path, io: IOContract, min_target: str) -> dict[str, Any]:
    """Loads the saved spec and checks static output shapes, dtypes, that every MIL op exists for the
    deployment target and that topk ranks fp32 scores; returns the program's op types and the scores' dtypes."""
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    with quiet("coremltools"):
        mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    spec = mlmodel.get_spec()
    expected = {info.name: (info.shape, info.dtype.upper()) for info in io.outputs}
    array_types = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    for output in spec.description.output:
        shape = tuple(int(d) for d in output.type.multiArrayType.shape)
        dtype = array_types.Name(output.type.multiArrayType.dataType)
        if (shape, dtype) != expected[output.name]:
            raise ExportError(f"Core ML output {output.name!r} is {dtype}{shape}; expected {expected[output.name]}")
    target = getattr(ct.target, min_target)
    operations = [
        op
        for function in spec.mlProgram.functions.values()
        for block in function.block_specializations.values()
        for op in block.operations
    ]
    ops = sorted({op.type for op in operations})
    unknown = [op for op in ops if target not in SSAOpRegistry.core_ops.get(op, {})]
    if unknown:
        raise ExportError(f"MIL ops {unknown} are not Core ML ops for {min_target}; the package would not load")
    ranked = topk_input_dtypes(operations)
    if any(dtype != "FLOAT32" for dtype in ranked):
        raise ExportError(
            f"topk ranks {ranked} scores in the {io.embeds_dtype} package; the score chain must stay fp32"
        )
    return {"mil_ops": ops, "topk_input_dtypes": ranked}


def topk_input_dtypes(operations: list[Any]) -> list[str]:
    """The dtype of what each MIL ``topk`` ranks, read from the saved program's value types."""
    import coremltools as ct

    names = ct.proto.MIL_pb2.DataType.Name
    produced = {out.name: names(out.type.tensorType.dataType) for op in operations for out in op.outputs}
    return [produced.get(op.inputs["x"].arguments[0].name, "?") for op in operations if op.type == "topk"]
