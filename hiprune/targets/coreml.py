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
from hiprune.errors import BackendUnavailableError, ExportError
from hiprune.export.coreml_export import export_for_coreml
from hiprune.quiet import quiet
from hiprune.runtime.compare import TOLERANCES, Comparison, compare_outputs
from hiprune.runtime.coreml_runner import METADATA_COMPUTE_UNITS, CoreMLRunner
from hiprune.targets.base import BuildJob, BuildOutput, Target, TargetOption
from hiprune.targets.onnx import reference_outputs

PACKAGE = "model.mlpackage"
MIN_TARGETS = ("iOS17", "macOS14", "iOS18", "macOS15")  # iOS17 and macOS14 are the same spec (8)
DESCRIPTIONS = {
    "pixel_values": "Image(s) resized and normalized by the checkpoint's image processor, float32 (B, 3, H, W)",
    "image_embeds": "The K kept visual tokens, projected into the language model's embedding space (B, K, D)",
    "indices": "Raster-order indices (ascending) of the kept patch tokens, int32 (B, K)",
}


class CoreMLTarget(Target):
    name: ClassVar[str] = "coreml"
    options: ClassVar[dict[str, TargetOption]] = {
        "precision": TargetOption(("fp16", "fp32"), "fp16"),
        "min_target": TargetOption(MIN_TARGETS, "iOS17"),
        "compute_units": TargetOption(("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only"), "all"),
    }

    def check_available(self) -> None:
        if (missing := coremltools_missing()) is not None:
            raise BackendUnavailableError(f"--target coreml needs coremltools: {missing}")
        with quiet("coremltools"):  # its first import prints warnings about torch versions and macOS-only proxies
            import coremltools  # noqa: F401

    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        with job.steps.step("torch.export, hiprune::select decomposed to topk/scatter/gather"):
            program = export_for_coreml(job.loaded.encoder, job.batch)
        with job.steps.step("Checking the decomposed program against the custom op"):
            decomposed = check_program(job, program)
        if not decomposed.ok:
            raise ExportError(f"the decomposed program disagrees with the custom op: {decomposed.describe()}")
        precision, target = self.settings["precision"], self.settings["min_target"]
        with job.steps.step(f"Converting with coremltools (mlprogram, {precision}, {target})"):
            mlmodel = self._convert(program, job)
        with job.steps.step(f"Saving {PACKAGE}"):
            mlmodel.save(str(stage / PACKAGE))
        with job.steps.step("Checking the saved package (spec, shapes, MIL ops)"):
            ops = check_package(stage / PACKAGE, job, precision, target)
        details: dict[str, Any] = {**self.settings, "mil_ops": ops, "prediction": self._predict(job, stage)}
        return BuildOutput(
            PACKAGE,
            details,
            decomposed,
            note=self._note(),
            output_dtypes=_output_dtypes(precision),
            comparison_label="converted program vs PyTorch",
        )

    def _convert(self, program: torch.export.ExportedProgram, job: BuildJob) -> Any:
        import coremltools as ct

        height, width = job.loaded.encoder.input_size
        embed_dtype = np.float16 if self.settings["precision"] == "fp16" else np.float32
        with quiet("coremltools"):
            mlmodel = ct.convert(
                program,
                inputs=[ct.TensorType(name="pixel_values", shape=(job.batch, 3, height, width), dtype=np.float32)],
                outputs=[
                    ct.TensorType(name="image_embeds", dtype=embed_dtype),
                    ct.TensorType(name="indices", dtype=np.int32),
                ],
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, self.settings["min_target"]),
                compute_precision=ct.precision.FLOAT16 if embed_dtype == np.float16 else ct.precision.FLOAT32,
                compute_units=getattr(ct.ComputeUnit, self.settings["compute_units"].upper()),
            )
        mlmodel.short_description = f"HiPrune-pruned vision encoder + projector ({job.metadata['hiprune.source']})"
        mlmodel.version = __version__
        mlmodel.author = "hiprune-export"
        for name, text in DESCRIPTIONS.items():
            (mlmodel.input_description if name == "pixel_values" else mlmodel.output_description)[name] = text
        mlmodel.user_defined_metadata.update({**job.metadata, METADATA_COMPUTE_UNITS: self.settings["compute_units"]})
        return mlmodel

    def _predict(self, job: BuildJob, stage: Path) -> dict[str, Any] | str:
        missing = coreml_predict_missing()
        if missing is not None:
            return f"not run: {missing}"
        pixel_values, reference = reference_outputs(job)
        with CoreMLRunner(stage / PACKAGE) as runner:
            actual = runner.infer({"pixel_values": pixel_values})
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


def _output_dtypes(precision: str) -> dict[str, str]:
    return {"image_embeds": "float16" if precision == "fp16" else "float32", "indices": "int32"}


def check_program(job: BuildJob, program: torch.export.ExportedProgram) -> Comparison:
    """Runs the exact program handed to coremltools and compares it with the module using the custom op."""
    pixel_values, reference = reference_outputs(job)
    with torch.no_grad():
        embeds, indices = program.module()(torch.from_numpy(pixel_values))
    actual = {"image_embeds": embeds.numpy(), "indices": indices.numpy()}
    return compare_outputs(reference, actual, TOLERANCES[("onnx", "fp32")])


def check_package(package: Path, job: BuildJob, precision: str, min_target: str) -> list[str]:
    """Loads the saved spec and checks static output shapes, dtypes and that every MIL op exists for the
    deployment target; returns the program's op types."""
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    with quiet("coremltools"):
        mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    cfg, spec = job.loaded.encoder.config, mlmodel.get_spec()
    embed_dim = job.loaded.adapter.spec.embed_dim
    expected = {
        "image_embeds": ((job.batch, cfg.kept, embed_dim), "FLOAT16" if precision == "fp16" else "FLOAT32"),
        "indices": ((job.batch, cfg.kept), "INT32"),
    }
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
