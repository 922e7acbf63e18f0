"""``--target coreml``: ``model.mlpackage`` (mlprogram) for Apple Silicon apps, selection lowered to MIL ops.

torch.export → ``hiprune::select`` decomposed to topk/scatter/gather → coremltools (mlprogram) with fixed
shapes (flexible shapes keep a model off the Neural Engine). Outputs: ``image_embeds`` in the requested
precision, ``indices`` int32 (Core ML has no int64 outputs). Conversion runs anywhere coremltools installs;
predictions need macOS, so on Linux the package's spec and MIL program are checked instead.
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
        with job.steps.step("Checking the decomposed program against the custom op"):
            decomposed = check_program(job, program)
        if not decomposed.ok:
            raise ExportError(f"the decomposed program disagrees with the custom op: {decomposed.describe()}")
        precision, target = self.settings["precision"], self.settings["min_target"]
        with job.steps.step(f"Converting with coremltools (mlprogram, {precision}, {target})"):
            mlmodel = self._convert(program, job)
        with job.steps.step(f"Saving {PACKAGE}"):
            mlmodel.save(str(stage / PACKAGE))
        io = package_contract(job.io, precision)
        with job.steps.step("Checking the saved package (spec, shapes, MIL ops)"):
            ops = check_package(stage / PACKAGE, io, target)
        details: dict[str, Any] = {**self.settings, "mil_ops": ops, "prediction": self._predict(job, io, stage)}
        return BuildOutput(
            PACKAGE, details, decomposed, note=self._note(), io=io, comparison_label="converted program vs PyTorch"
        )

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
                compute_precision=ct.precision.FLOAT16 if io.embeds_dtype == "float16" else ct.precision.FLOAT32,
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

    def _predict(self, job: BuildJob, io: IOContract, stage: Path) -> dict[str, Any] | str:
        missing = coreml_predict_missing()
        if missing is not None:
            return f"not run: {missing}"
        pixel_values, reference = reference_outputs(job)
        with CoreMLRunner(stage / PACKAGE, contract=io) as runner:
            actual = runner.infer(io.feed(pixel_values))
        check = compare_outputs(reference, actual, TOLERANCES[("coreml", self.settings["precision"])])
        if not check.ok:
            raise ExportError(f"Core ML predictions disagree with PyTorch: {check.describe()}")
        return dataclasses.asdict(check)

    @staticmethod
    def _note() -> str | None:
        if coreml_predict_missing() is None:
            return None
        return (
            "Core ML predictions need macOS: the package was converted and its spec, shapes and MIL ops checked "
            "here; the decomposed program (what coremltools converted) was run against PyTorch."
        )


def package_contract(io: IOContract, precision: str) -> IOContract:
    """The package's outputs: embeds in the requested precision, indices int32 (Core ML has no int64 outputs)."""
    return io.with_dtypes(embeds="float16" if precision == "fp16" else "float32", indices="int32")


def check_program(job: BuildJob, program: torch.export.ExportedProgram) -> Comparison:
    """Runs the exact program handed to coremltools and compares it with the module using the custom op."""
    pixel_values, reference = reference_outputs(job)
    with torch.no_grad():
        embeds, indices = program.module()(torch.from_numpy(pixel_values))
    return compare_outputs(reference, job.io.name_outputs(embeds.numpy(), indices.numpy()), REFERENCE_TOLERANCE)


def check_package(package: Path, io: IOContract, min_target: str) -> list[str]:
    """Loads the saved spec and checks static output shapes, dtypes and that every MIL op exists for the
    deployment target; returns the program's op types."""
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
    ops = sorted(
        {
            op.type
            for function in spec.mlProgram.functions.values()
            for block in function.block_specializations.values()
            for op in block.operations
        }
    )
    unknown = [op for op in ops if target not in SSAOpRegistry.core_ops.get(op, {})]
    if unknown:
        raise ExportError(f"MIL ops {unknown} are not Core ML ops for {min_target}; the package would not load")
    return ops
