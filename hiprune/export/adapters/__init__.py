"""Encoder adapters, one module per VLM family, registered in :data:`ADAPTERS`."""

from __future__ import annotations

from typing import Any

from hiprune.errors import CheckpointError
from hiprune.export.adapters.base import EncoderAdapter, EncoderSpec, VisionTrunk
from hiprune.export.adapters.llava_clip import LlavaClipAdapter
from hiprune.export.adapters.llava_siglip import LlavaSiglipAdapter

ADAPTERS: tuple[type[EncoderAdapter], ...] = (LlavaClipAdapter, LlavaSiglipAdapter)


def adapter_for(config: Any, source: str) -> EncoderAdapter:
    """The adapter that serves ``config``, or a :class:`CheckpointError` naming what is supported."""
    for adapter in ADAPTERS:
        if adapter.matches(config):
            return adapter(config)
    model_type = getattr(config, "model_type", None)
    supported = "; ".join(a.description for a in ADAPTERS)
    raise CheckpointError(f"--model {source}: model_type {model_type!r} is not a supported VLM; supported: {supported}")


__all__ = ["ADAPTERS", "EncoderAdapter", "EncoderSpec", "VisionTrunk", "adapter_for"]
