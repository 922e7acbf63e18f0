"""Optional heavy backends: one place that says whether each can run here, imported lazily.

``*_missing()`` returns a one-line reason (what is missing and how to get it) or ``None``; CLI errors and
pytest skips both use it.
"""

from __future__ import annotations

import importlib.util
import platform


def tensorrt_missing() -> str | None:
    """TensorRT's Python package, Polygraphy, and a CUDA GPU, all needed to build or run engines."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT's Python package is not installed (pip install '.[tensorrt]' on a machine with an NVIDIA GPU)"
    if importlib.util.find_spec("polygraphy") is None:
        return "Polygraphy is not installed (pip install '.[tensorrt]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to this process"
    return None


def coremltools_missing() -> str | None:
    """coremltools, needed to convert (on any OS)."""
    if importlib.util.find_spec("coremltools") is None:
        return "coremltools is not installed (pip install '.[coreml]')"
    return None


def coreml_predict_missing() -> str | None:
    """Core ML predictions need macOS (coremltools converts on Linux but cannot run a model there)."""
    if platform.system() != "Darwin":
        return f"Core ML predictions need macOS; this machine runs {platform.system()}"
    return coremltools_missing()
