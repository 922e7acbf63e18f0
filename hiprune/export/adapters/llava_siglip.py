"""LLaVA with a SigLIP tower (LLaVA-Interleave / OneVision-style checkpoints): no CLS token, features whole.

The checkpoint is a ``LlavaForConditionalGeneration`` whose ``vision_config`` is ``siglip_vision_model``
(e.g. ``llava-interleave-qwen-0.5b-hf``: 27x27 = 729 patch tokens at 384/14, feature layer -1). Scores keep
every column (``attn.mean(heads).mean(queries)`` over all patch tokens), features are ``hidden_states[f]``
whole (select strategy ``full``), and the tower's ``post_layernorm`` and pooling head are never applied or read,
as in transformers, where ``hidden_states[-1]`` is the last layer's output before the post-layernorm.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer, SiglipVisionEmbeddings

from hiprune.export.adapters.llava_clip import LlavaClipAdapter
from hiprune.export.adapters.vit import Layers, ScoreFn, VitTrunk


class SiglipTrunk(VitTrunk):
    """SigLIP embeddings (patch conv + position embedding, no CLS, no pre-norm) + the first ``num_layers`` layers.

    Parameter names match ``SiglipVisionModel``'s ``vision_model`` (``embeddings.*``, ``encoder.layers.N.*``).
    """

    def __init__(
        self, vision_config: Any, num_layers: int, score_layers: tuple[int, ...], scores: ScoreFn, features: ScoreFn
    ) -> None:
        super().__init__(score_layers, scores, features)
        self.embeddings = SiglipVisionEmbeddings(vision_config)
        self.encoder = Layers(SiglipEncoderLayer(vision_config) for _ in range(num_layers))

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.embeddings
        patches = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        return patches + emb.position_embedding.weight


class LlavaSiglipAdapter(LlavaClipAdapter):
    name: ClassVar[str] = "llava-siglip"
    description: ClassVar[str] = "LLaVA with a SigLIP tower (model_type 'llava', vision model 'siglip_vision_model')"
    prefix_tokens: ClassVar[int] = 0
    vision_model_type: ClassVar[str] = "siglip_vision_model"
    select_strategy: ClassVar[str] = "full"
    tower_roots: ClassVar[tuple[str, ...]] = ("embeddings.",)

    def make_trunk(self, score_layers: tuple[int, ...]) -> VitTrunk:
        vision = self.config.vision_config
        return SiglipTrunk(vision, self.spec.deep_layer, score_layers, self.scores, self.patch_features)
