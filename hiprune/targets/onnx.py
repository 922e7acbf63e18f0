"""``--target onnx``: ``model.onnx`` (+ external data) with one ``hiprune::Select`` node, run on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from hiprune.export.onnx_export import OPSET
from hiprune.targets.base import BuildJob, BuildOutput, Target
from hiprune.targets.spine import REFERENCE_TOLERANCE, check_on_ort, save_model, traced_and_checked

MODEL_FILE = "model.onnx"


class OnnxTarget(Target):
    name: ClassVar[str] = "onnx"

    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        model = traced_and_checked(job)
        with job.steps.step(f"Writing {MODEL_FILE}"):
            save_model(model, stage / MODEL_FILE)
        with job.steps.step("Running once on ONNX Runtime (CPU) against PyTorch"):
            comparison = check_on_ort(job, stage / MODEL_FILE, REFERENCE_TOLERANCE)
        return BuildOutput(MODEL_FILE, {"opset": OPSET, "runtime": "onnxruntime"}, comparison)
