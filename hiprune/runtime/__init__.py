"""Runners over exported artifacts (ONNX Runtime today; TensorRT and Core ML plug in beside it)."""

from hiprune.runtime.runners import BaseRunner, OrtRunner, TensorSpec

__all__ = ["BaseRunner", "OrtRunner", "TensorSpec"]
