"""``torch.export`` of a :class:`PrunedEncoder` with ``hiprune::select`` decomposed for Core ML.

Core ML's mlprogram has no custom layers, so the op becomes :func:`~hiprune.selection.select_topk_form`
(MIL ``topk``, ``scatter_along_axis``, ``gather_along_axis``, ``argsort``) before coremltools sees the program.
coremltools' ``torch.jit.trace`` path fails on transformers' CLIP code; ``torch.export`` is the path that works.
"""

from __future__ import annotations

import torch

from hiprune.errors import ExportError, innermost, one_line
from hiprune.export.encoder import PrunedEncoder, example_input
from hiprune.quiet import quiet
from hiprune.selection import select_topk_form


def export_for_coreml(encoder: PrunedEncoder, batch: int) -> torch.export.ExportedProgram:
    """The exact program handed to coremltools: static shapes, no custom op left."""
    try:
        with quiet("torch.export"):
            program = torch.export.export(encoder, (example_input(encoder, batch),), strict=False)
            program = program.run_decompositions({torch.ops.hiprune.select.default: select_topk_form})
    except Exception as exc:
        raise ExportError(f"torch.export failed: {one_line(innermost(exc))}; rerun with --verbose") from exc
    left = [n for n in program.graph.nodes if n.op == "call_function" and "hiprune" in str(n.target)]
    if left:
        raise ExportError(f"hiprune::select survived decomposition ({left[0].target}); Core ML cannot run it")
    return program
