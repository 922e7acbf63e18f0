"""Trace a :class:`PrunedEncoder` to ONNX with ``hiprune::select`` kept as one ``hiprune::Select`` node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx_ir as ir
import torch

from hiprune.contract import INPUT_NAMES, OUTPUT_NAMES
from hiprune.errors import ExportError, innermost, one_line
from hiprune.export.encoder import PrunedEncoder, example_input
from hiprune.graphs import select_op
from hiprune.quiet import quiet

OPSET = 18  # ONNX Runtime, TensorRT 8.6+/10.x and the onnx checker all cover opset 18


def _select_translation(s_obj, s_deep, keep: int, anchors: int, grid_width: int, grid_neighbors: bool):
    return select_op.select_opset.Select(
        s_obj, s_deep, keep=keep, anchors=anchors, grid_width=grid_width, grid_neighbors=int(grid_neighbors)
    )


def export_to_ir(encoder: PrunedEncoder, batch: int) -> ir.Model:
    """Exports with static shapes (batch fixed) through ``torch.onnx.export(dynamo=True)``."""
    args = (example_input(encoder, batch),)
    table: dict[Callable[..., Any], Callable[..., Any]] = {torch.ops.hiprune.select.default: _select_translation}
    try:
        with quiet("torch.onnx", "onnx_ir", "onnxscript"):
            program = torch.onnx.export(
                encoder,
                args,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                custom_translation_table=table,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {one_line(innermost(exc))}; rerun with --verbose") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program; rerun with --verbose")
    return program.model
