"""Encoder adapters, one module per VLM family, registered in :data:`ADAPTERS`."""

from __future__ import annotations

from typing import Any

from hiprune.config import EncoderOptions
from hiprune.errors import CheckpointError
from hiprune.export.adapters.base import CropGrid, EncoderAdapter, EncoderSpec, VisionTrunk
from hiprune.export.adapters.llava_clip import LlavaClipAdapter
from hiprune.export.adapters.llava_next import LlavaNextAdapter
from hiprune.export.adapters.llava_siglip import LlavaSiglipAdapter

ADAPTERS: tuple[type[EncoderAdapter], ...] = (LlavaClipAdapter, LlavaSiglipAdapter, LlavaNextAdapter)


def adapter_for(config: Any, source: str, options: EncoderOptions | None = None) -> EncoderAdapter:
    """The adapter that serves ``config`` with ``options``, or a :class:`CheckpointError` naming what is supported."""
    for adapter in ADAPTERS:
        if adapter.matches(config):
            return adapter(config, options)
    model_type = getattr(config, "model_type", None)
    supported = "; ".join(a.description for a in ADAPTERS)
    raise CheckpointError(f"--model {source}: model_type {model_type!r} is not a supported VLM; supported: {supported}")


__all__ = [
    "ADAPTERS",
    "CropGrid",
    "EncoderAdapter",
    "EncoderSpec",
    "LlavaClipAdapter",
    "LlavaNextAdapter",
    "LlavaSiglipAdapter",
    "VisionTrunk",
    "adapter_for",
]
