"""Target registry: name → ``module:Class``, imported only when chosen."""

from __future__ import annotations

import importlib

from hiprune.errors import ConfigError
from hiprune.targets.base import OPTION_OWNERS, BuildJob, BuildOutput, Target, TargetOption

TARGETS: dict[str, str] = {
    "onnx": "hiprune.targets.onnx:OnnxTarget",
    "tensorrt": "hiprune.targets.tensorrt:TensorRTTarget",
    "coreml": "hiprune.targets.coreml:CoreMLTarget",
}
# target-specific options, by target (kept here so the CLI and error messages need no target import)
OPTION_OWNERS.update(
    {
        "onnx": (),
        "tensorrt": ("device", "precision", "build"),
        "coreml": ("precision", "min_target", "compute_units"),
    }
)


def get_target(name: str) -> type[Target]:
    if name not in TARGETS:
        raise ConfigError(f"--target {name!r} is not known; available: {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["OPTION_OWNERS", "TARGETS", "BuildJob", "BuildOutput", "Target", "TargetOption", "get_target"]
