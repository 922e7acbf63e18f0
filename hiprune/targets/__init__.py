"""Target registry: name → ``module:Class``, imported only when chosen.

Importing this package is cheap (no torch, no target module): the CLI lists targets and their options
(:mod:`hiprune.targets.options`) from here.
"""

from __future__ import annotations

import importlib

from hiprune.errors import ConfigError
from hiprune.targets.base import BuildJob, BuildOutput, Target
from hiprune.targets.options import OPTIONS, OptionChoices, TargetOption

TARGETS: dict[str, str] = {
    "onnx": "hiprune.targets.onnx:OnnxTarget",
    "tensorrt": "hiprune.targets.tensorrt:TensorRTTarget",
    "coreml": "hiprune.targets.coreml:CoreMLTarget",
}


def get_target(name: str) -> type[Target]:
    if name not in TARGETS:
        raise ConfigError(f"--target {name!r} is not known; available: {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["OPTIONS", "TARGETS", "BuildJob", "BuildOutput", "OptionChoices", "Target", "TargetOption", "get_target"]
