"""``--target onnx``: ``model.onnx`` (+ external data) with one ``hiprune::Select`` node, run on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx_ir as ir
import torch

from hiprune.export.encoder import example_input
from hiprune.export.onnx_export import OPSET, export_to_ir
from hiprune.graphs.pipelines import finalize_onnx
from hiprune.runtime.compare import TOLERANCES, Comparison, Tolerance, compare_outputs
from hiprune.runtime.runners import OrtRunner
from hiprune.targets.base import BuildJob, BuildOutput, Target

MODEL_FILE = "model.onnx"
VERIFY_SEED = 1


class OnnxTarget(Target):
    name: ClassVar[str] = "onnx"

    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        model = traced_and_checked(job)
        with job.steps.step(f"Writing {MODEL_FILE}"):
            save_model(model, stage / MODEL_FILE)
        with job.steps.step("Running once on ONNX Runtime (CPU) against PyTorch"):
            comparison = check_on_ort(job, stage / MODEL_FILE, TOLERANCES[("onnx", "fp32")])
        return BuildOutput(MODEL_FILE, {"opset": OPSET, "runtime": "onnxruntime"}, comparison)


def traced_and_checked(job: BuildJob) -> ir.Model:
    """The spine every ONNX-based target starts from: traced, Select body attached, checked, with metadata."""
    with job.steps.step("Tracing with torch.onnx.export (dynamo)"):
        model = export_to_ir(job.loaded.encoder, job.batch)
    with job.steps.step("Checking the graph (onnx checker, shape inference, static shapes)"):
        return finalize_onnx(model, job.metadata)


def save_model(model: ir.Model, path: Path) -> None:
    """Saves with weights in one external data file beside the graph (models of any size, mmap-friendly)."""
    ir.save(model, path, external_data=path.name + ".data", size_threshold_bytes=1024)
    data = path.with_name(path.name + ".data")
    if data.exists() and data.stat().st_size == 0:
        data.unlink()


def reference_outputs(job: BuildJob) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The check input (seeded) and the PyTorch module's outputs on it."""
    pixel_values = example_input(job.loaded.encoder, job.batch, seed=VERIFY_SEED)
    with torch.no_grad():
        embeds, indices = job.loaded.encoder(pixel_values)
    return pixel_values.numpy(), {"image_embeds": embeds.numpy(), "indices": indices.numpy()}


def check_on_ort(job: BuildJob, path: Path, tolerance: Tolerance) -> Comparison:
    """One input through an ONNX file on ORT CPU and through the PyTorch module; their outputs compared."""
    pixel_values, reference = reference_outputs(job)
    with OrtRunner(path) as runner:
        actual = runner.infer({"pixel_values": pixel_values})
    return compare_outputs(reference, actual, tolerance)
