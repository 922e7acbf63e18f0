"""hiprune-export: HiPrune visual-token pruning as deployable ONNX / TensorRT / Core ML graphs."""

from __future__ import annotations

__version__ = "0.1.0"
