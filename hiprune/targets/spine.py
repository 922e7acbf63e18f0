"""The export spine every target builds on: trace, check, reference outputs, compare, save.

Targets import this module and :mod:`hiprune.graphs`, never each other. It lives in ``targets/`` because it
composes three lower layers (``export/`` to trace, ``graphs/`` to check, ``runtime/`` to run) that must not
import one another; it is not a target and is not registered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from hiprune.runtime.compare import TOLERANCES, Comparison, Tolerance, check_input, compare_outputs
from hiprune.runtime.runners import OrtRunner
from hiprune.targets.base import BuildJob

REFERENCE_TOLERANCE = TOLERANCES[("onnx", "fp32")]  # fp32 graphs vs the fp32 module


def traced_and_checked(job: BuildJob) -> ir.Model:
    """The ONNX graph every ONNX-based target starts from: traced, Select body attached, checked, with metadata."""
    from hiprune.export.onnx_export import export_to_ir
    from hiprune.graphs.pipelines import finalize_onnx

    with job.steps.step("Tracing with torch.onnx.export (dynamo)"):
        model = export_to_ir(job.encoder, job.batch)
    with job.steps.step("Checking the graph (onnx checker, shape inference, static shapes)"):
        return finalize_onnx(model, job.metadata)


def save_model(model: ir.Model, path: Path) -> None:
    """Saves with weights in one external data file beside the graph (models of any size, mmap-friendly)."""
    ir.save(model, path, external_data=path.name + ".data", size_threshold_bytes=1024)
    data = path.with_name(path.name + ".data")
    if data.exists() and data.stat().st_size == 0:
        data.unlink()


def reference_outputs(job: BuildJob) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The check input and the PyTorch module's outputs on it, keyed by the contract's output names."""
    return job.reference


def compute_reference(job: BuildJob) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Runs the PyTorch module once on the check input (:attr:`BuildJob.reference` keeps the result): the same
    seeded pixels the engine check and ``compare.sh`` use (:func:`~hiprune.runtime.compare.check_input`)."""
    pixel_values = check_input(job.io.pixel_values.shape)
    with torch.no_grad():
        embeds, indices = job.encoder(torch.from_numpy(pixel_values))
    return pixel_values, job.io.name_outputs(embeds.numpy(), indices.numpy())


def check_on_ort(job: BuildJob, path: Path, tolerance: Tolerance) -> Comparison:
    """One input through an ONNX file on ORT CPU and through the PyTorch module; their outputs compared."""
    pixel_values, reference = reference_outputs(job)
    with OrtRunner(path, contract=job.io) as runner:
        actual = runner.infer(job.io.feed(pixel_values))
    return compare_outputs(reference, actual, tolerance, what=f"{path.name} on ONNX Runtime CPU vs PyTorch")
