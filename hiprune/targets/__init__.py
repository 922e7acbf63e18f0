"""Target registry: name → ``module:Class``, imported only when chosen."""

from __future__ import annotations

import importlib

from hiprune.errors import ConfigError
from hiprune.targets.base import BuildJob, BuildOutput, Target

TARGETS: dict[str, str] = {
    "onnx": "hiprune.targets.onnx:OnnxTarget",
}


def get_target(name: str) -> type[Target]:
    if name not in TARGETS:
        raise ConfigError(f"--target {name!r} is not known; available: {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["TARGETS", "BuildJob", "BuildOutput", "Target", "get_target"]
