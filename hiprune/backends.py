"""Optional heavy backends: one place that says whether each can run here, imported lazily.

``*_missing()`` returns a one-line reason (what is missing and how to get it) or ``None``; CLI errors and
pytest skips both use it.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
from pathlib import Path


@functools.cache
def tensorrt_missing() -> str | None:
    """TensorRT's Python package, Polygraphy (the runner), and a GPU that TensorRT itself can use."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT's Python package is not installed (pip install '.[tensorrt]' on a machine with an NVIDIA GPU)"
    if importlib.util.find_spec("polygraphy") is None:
        return "Polygraphy is not installed (pip install '.[tensorrt]')"
    from hiprune.runtime.tensorrt_build import TENSORRT, gpu_missing

    return gpu_missing(TENSORRT)


def tensorrt_rtx_missing() -> str | None:
    """TensorRT-RTX's builder and parser (``pip install tensorrt-rtx``); they need no GPU."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        return "TensorRT-RTX is not installed (pip install tensorrt-rtx)"
    return None


@functools.cache
def tensorrt_rtx_runtime_missing() -> str | None:
    """TensorRT-RTX's runtime plus an RTX-class GPU it accepts (compute capability 8.0-8.9 or 12.x) and torch's
    CUDA build (the runner's device buffers)."""
    if (missing := tensorrt_rtx_missing()) is not None:
        return missing
    from hiprune.runtime.tensorrt_build import TENSORRT_RTX, gpu_missing

    if (missing := gpu_missing(TENSORRT_RTX)) is not None:
        return missing
    import torch

    return None if torch.cuda.is_available() else "torch has no CUDA device here (the runner's buffers need one)"


def jetson_model() -> str | None:
    """The Jetson this process runs on (``/proc/device-tree/model``), or None elsewhere."""
    model = Path("/proc/device-tree/model")
    text = model.read_text(errors="replace").strip("\x00 \n") if model.is_file() else ""
    return text if "jetson" in text.lower() or "orin" in text.lower() or "thor" in text.lower() else None


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
