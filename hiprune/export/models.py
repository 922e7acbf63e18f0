"""Where encoders come from: a checkpoint on disk / in the hub cache, or the built-in default architecture."""

from __future__ import annotations

import dataclasses
from typing import Any

from hiprune.config import EncoderOptions, HiPruneConfig
from hiprune.contract import IOContract
from hiprune.export.adapters import EncoderAdapter, adapter_for
from hiprune.export.encoder import PrunedEncoder, build_encoder, plan_selection
from hiprune.export.loading import read_tensors, resolve_checkpoint, weight_files

DEFAULT_MODEL_NAME = "llava-1.5-7b architecture (random weights)"
DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class LoadedEncoder:
    """A built encoder and where it came from (for metadata and manifests)."""

    encoder: PrunedEncoder
    adapter: EncoderAdapter
    source: dict[str, str]

    def contract(self, batch: int) -> IOContract:
        """The I/O contract of an artifact of this encoder with a static ``batch``."""
        spec = self.adapter.spec
        return IOContract(batch, spec.input_shape, self.encoder.plan.kept, spec.total_tokens, spec.embed_dim)


def default_llava15_config() -> Any:
    """LLaVA-1.5-7B's vision tower + projector: CLIP ViT-L/14-336 (24 layers, 1024 wide), feature layer -2,
    a GELU MLP projector to 4096. The language model is a stub: only its hidden size is read."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(hidden_size=4096, num_hidden_layers=1, num_attention_heads=32, vocab_size=32064)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def load_encoder(
    model: str | None, hiprune: HiPruneConfig, allow_pickle: bool = False, options: EncoderOptions | None = None
) -> LoadedEncoder:
    """Builds the pruned encoder for ``model`` (a directory or cached hub id), or the default when ``None``.

    Only the vision tower's layers up to the feature layer and the projector are read from the checkpoint.
    """
    hiprune.validate_static()
    if model is None:
        adapter = adapter_for(default_llava15_config(), "default", options)
        encoder = build_encoder(adapter, hiprune, tensors=None, seed=DEFAULT_SEED)
        return LoadedEncoder(encoder, adapter, {"source": DEFAULT_MODEL_NAME, "seed": str(DEFAULT_SEED)})
    checkpoint = resolve_checkpoint(model)
    adapter = adapter_for(checkpoint.config, model, options)

    plan_selection(hiprune, adapter.spec)  # fail on bad settings before reading gigabytes
    tensors = read_tensors(weight_files(checkpoint.path, allow_pickle), adapter.module_name)
    encoder = build_encoder(adapter, hiprune, tensors)
    return LoadedEncoder(encoder, adapter, checkpoint.describe())
