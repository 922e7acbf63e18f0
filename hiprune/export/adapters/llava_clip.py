"""LLaVA-1.5: a CLIP ViT tower (``CLIPVisionModel``) and a two-layer MLP projector."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPVisionEmbeddings
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from hiprune.errors import CheckpointError
from hiprune.export.adapters.base import EncoderAdapter, EncoderSpec, VisionTrunk, random_init_
from hiprune.export.adapters.vit import Layers, ScoreFn, VitTrunk

# The paper's object layer for CLIP ViT-L/14 (24 layers); other depths scale it (9/24 of the tower).
PAPER_OBJECT_LAYER = 9
PAPER_TOWER_DEPTH = 24
TOWER_PREFIXES = (
    "model.vision_tower.vision_model.",
    "model.vision_tower.",
    "vision_tower.vision_model.",
    "vision_tower.",
)
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")


class ClipTrunk(VitTrunk):
    """CLIP embeddings + ``pre_layrnorm`` + the first ``num_layers`` encoder layers.

    Parameter names match ``CLIPVisionModel`` (``embeddings.*``, ``pre_layrnorm.*``, ``encoder.layers.N.*``),
    so checkpoint tensors load by name.
    """

    def __init__(
        self, vision_config: Any, num_layers: int, score_layers: tuple[int, ...], scores: ScoreFn, features: ScoreFn
    ) -> None:
        super().__init__(score_layers, scores, features)
        self.embeddings = CLIPVisionEmbeddings(vision_config)
        self.pre_layrnorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.encoder = Layers(CLIPEncoderLayer(vision_config) for _ in range(num_layers))

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.embeddings
        patches = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = emb.class_embedding.expand(pixel_values.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + emb.position_embedding.weight
        return self.pre_layrnorm(x)


class LlavaClipAdapter(EncoderAdapter):
    """LLaVA-1.5. Other LLaVA-style families (a ViT tower, a per-token MLP projector, the same checkpoint key
    layouts) subclass it and change the class attributes and :meth:`make_trunk`."""

    name: ClassVar[str] = "llava-clip"
    description: ClassVar[str] = "LLaVA-1.5 (model_type 'llava' with a CLIP vision tower)"
    prefix_tokens: ClassVar[int] = 1
    model_type: ClassVar[str] = "llava"
    vision_model_type: ClassVar[str] = "clip_vision_model"
    select_strategy: ClassVar[str] = "default"  # LLaVA's vision_feature_select_strategy that this family needs
    tower_roots: ClassVar[tuple[str, ...]] = ("embeddings.", "pre_layrnorm.")  # tower tensors besides the layers

    @classmethod
    def matches(cls, config: Any) -> bool:
        vision = getattr(config, "vision_config", None)
        return (
            getattr(config, "model_type", None) == cls.model_type
            and getattr(vision, "model_type", None) == cls.vision_model_type
        )

    def read_spec(self) -> EncoderSpec:
        config, vision = self.config, self.config.vision_config
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise CheckpointError(
                f"vision_feature_layer {layer!r} concatenates several layers; HiPrune export supports one feature layer"
            )
        if config.vision_feature_select_strategy != self.select_strategy:
            what = "CLS dropped" if self.prefix_tokens else "every token, the tower has no CLS"
            raise CheckpointError(
                f"vision_feature_select_strategy {config.vision_feature_select_strategy!r} is not supported for "
                f"{self.description}; HiPrune selects among patch tokens (strategy {self.select_strategy!r}, {what})"
            )
        depth = vision.num_hidden_layers
        deep = layer if layer >= 0 else depth + 1 + layer
        if not 1 <= deep <= depth:
            raise CheckpointError(f"vision_feature_layer {layer} does not name a layer of the {depth}-layer tower")
        side = vision.image_size // vision.patch_size
        return EncoderSpec(
            family=self.name,
            image_size=(vision.image_size, vision.image_size),
            num_layers=depth,
            deep_layer=deep,
            default_object_layer=max(1, min(deep - 1, math.floor(PAPER_OBJECT_LAYER * depth / PAPER_TOWER_DEPTH))),
            grid=(side, side),
            feature_dim=vision.hidden_size,
            embed_dim=config.text_config.hidden_size,
        )

    def module_name(self, checkpoint_name: str) -> str | None:
        for prefix in PROJECTOR_PREFIXES:
            if checkpoint_name.startswith(prefix):
                return "projector." + checkpoint_name[len(prefix) :]
        for prefix in TOWER_PREFIXES:
            if checkpoint_name.startswith(prefix):
                return self._tower_name(checkpoint_name[len(prefix) :])
        return None

    def _tower_name(self, name: str) -> str | None:
        if name.startswith(self.tower_roots):
            return "trunk." + name if not name.endswith("position_ids") else None
        if name.startswith("encoder.layers."):
            number = int(name.split(".")[2]) + 1
            return "trunk." + name if number <= self.spec.deep_layer else None
        return None

    def make_trunk(self, score_layers: tuple[int, ...]) -> VitTrunk:
        """The family's trunk module (built on the meta device by :meth:`build`)."""
        vision = self.config.vision_config
        return ClipTrunk(vision, self.spec.deep_layer, score_layers, self.scores, self.patch_features)

    def make_projector(self) -> nn.Module:
        """The family's projector module (built on the meta device by :meth:`build`)."""
        return LlavaMultiModalProjector(self.config)

    def build(
        self, tensors: Mapping[str, torch.Tensor] | None, score_layers: tuple[int, ...], seed: int = 0
    ) -> tuple[VisionTrunk, nn.Module]:
        with torch.device("meta"):
            holder = nn.Module()
            holder.trunk = trunk = self.make_trunk(score_layers)
            holder.projector = projector = self.make_projector()
        if tensors is None:
            random_init_(holder, seed)
        else:
            _load_exact(holder, tensors, self.description)
        embeddings: Any = trunk.embeddings  # its non-persistent buffer is not in any checkpoint
        embeddings.position_ids = nn.Buffer(torch.arange(embeddings.num_positions).expand((1, -1)), persistent=False)
        holder.eval()
        return trunk, projector


def _load_exact(holder: nn.Module, tensors: Mapping[str, torch.Tensor], family: str) -> None:
    expected = set(holder.state_dict().keys())
    missing = sorted(expected - set(tensors))
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {len(missing)} vision/projector tensors (first: {missing[0]}); "
            f"it is incomplete or not a {family} checkpoint"
        )
    holder.load_state_dict({k: tensors[k] for k in expected}, strict=True, assign=True)
