"""The encoder-family seam: one adapter per VLM family.

An adapter knows everything family-specific: the geometry (:class:`EncoderSpec`), which checkpoint tensors it
needs and under which module names, how to build the vision trunk and projector from them, how a layer's
attention becomes a per-token score (a CLS column to drop or not), and whether the projector runs on the kept
tokens only or on all tokens before the gather. :class:`~hiprune.export.encoder.PrunedEncoder` asks the adapter
for each of these; the select op, export and targets never see the family.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from hiprune.config import EncoderOptions
from hiprune.errors import ConfigError
from hiprune.selection import received_attention


@dataclasses.dataclass(frozen=True)
class CropGrid:
    """LLaVA-NeXT's anyres crops for one grid pinpoint: the base view, then ``rows x cols`` tiles row-major.

    Attributes:
        resolution: (H, W) of the pinpoint.
        tiles: (rows, cols) of tiles, each one view of the tower's image size.
        layout: order of the kept tokens (``paper``: base raster, then the stitched tile grid row-major).
    """

    resolution: tuple[int, int]
    tiles: tuple[int, int]
    layout: str

    @property
    def views(self) -> int:
        return 1 + self.tiles[0] * self.tiles[1]


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """Geometry of an encoder as HiPrune sees it.

    Attributes:
        family: adapter name.
        image_size: (H, W) of one view through the tower.
        num_layers: layers in the checkpoint's tower.
        deep_layer: 1-based layer whose output is the feature layer; its attention gives the register score.
        default_object_layer: 1-based layer whose attention picks anchors when none is given.
        grid: (rows, cols) of the patch grid; N = rows * cols.
        feature_dim: width of the features fed to the projector.
        embed_dim: width of the projector's output (the LLM's embedding size).
        crops: the crop grid when an image is several views (LLaVA-NeXT), ``None`` for one view.
    """

    family: str
    image_size: tuple[int, int]
    num_layers: int
    deep_layer: int
    default_object_layer: int
    grid: tuple[int, int]
    feature_dim: int
    embed_dim: int
    crops: CropGrid | None = None

    @property
    def num_tokens(self) -> int:
        """Patch tokens N of one view."""
        return self.grid[0] * self.grid[1]

    @property
    def views(self) -> int:
        return 1 if self.crops is None else self.crops.views

    @property
    def total_tokens(self) -> int:
        """Patch tokens of one image over all its views."""
        return self.views * self.num_tokens

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image's ``pixel_values`` (no batch axis): (3, H, W), or (views, 3, H, W) with crops."""
        view = (3, *self.image_size)
        return view if self.crops is None else (self.views, *view)


class VisionTrunk(nn.Module, abc.ABC):
    """The tower cut after the feature layer, returning features and the scores of the requested layers."""

    score_layers: tuple[int, ...]

    @abc.abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, 3, H, W) → features (B, N, C) and one (B, N) received-attention score per ``score_layers`` entry."""


class EncoderAdapter(abc.ABC):
    """One VLM family. Subclasses set the class attributes and implement the four abstract members below.

    Attributes:
        name: the family's short name (manifests, metadata).
        description: what checkpoints it serves, for error messages.
        prefix_tokens: tokens the tower puts before the patch grid (1 for CLIP's CLS, 0 for SigLIP); their
            attention columns are dropped from scores and their hidden states from features.
        gather_before_projector: ``True`` when the projector is per-token (LLaVA's MLP), so projecting only the
            kept tokens is equivalent and cheaper; ``False`` for projectors that mix tokens (e.g. a 2x2 merger),
            which must see every token before the gather.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    prefix_tokens: ClassVar[int]
    gather_before_projector: ClassVar[bool] = True

    def __init__(self, config: Any, options: EncoderOptions | None = None) -> None:
        self.config = config
        self.options = options or EncoderOptions()
        self.check_options()
        self.spec = self.read_spec()

    def check_options(self) -> None:
        """Refuses encoder options the family has no use for (families with crops override this)."""
        for flag, value in (("--resolution", self.options.resolution), ("--layout", self.options.layout)):
            if value is not None:
                raise ConfigError(
                    f"{flag} {value} applies to LLaVA-NeXT checkpoints only; this checkpoint is {self.description}, "
                    f"which takes one image per view: drop {flag}"
                )

    @classmethod
    @abc.abstractmethod
    def matches(cls, config: Any) -> bool:
        """Whether this adapter handles a checkpoint with this transformers config."""

    @abc.abstractmethod
    def read_spec(self) -> EncoderSpec:
        """Geometry from the config; raises :class:`~hiprune.errors.CheckpointError` on what it cannot serve."""

    @abc.abstractmethod
    def module_name(self, checkpoint_name: str) -> str | None:
        """Module-side name of a checkpoint tensor the encoder needs, ``None`` for every other tensor."""

    @abc.abstractmethod
    def build(
        self, tensors: Mapping[str, torch.Tensor] | None, score_layers: tuple[int, ...], seed: int = 0
    ) -> tuple[VisionTrunk, nn.Module]:
        """Trunk and projector with ``tensors`` loaded, or random weights (seeded) when ``tensors`` is None."""

    def scores(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, T) softmax probabilities → (B, N) attention received by each selectable token."""
        return received_attention(probs, self.prefix_tokens)

    def patch_features(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) hidden states of the feature layer → (B, N, C) features of the selectable tokens."""
        return hidden[:, self.prefix_tokens :] if self.prefix_tokens else hidden

    def fold(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The graph input → (B', 3, H, W) views for the tower (families with crops fold them into the batch)."""
        return pixel_values

    def unfold(self, embeds: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-view (B', k, D) embeddings and (B', k) indices → the graph's per-image outputs, in the family's
        layout."""
        return embeds, indices

    def project_kept(self, projector: nn.Module, features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Embeddings of the kept tokens: (B, N, C) features and (B, K) indices → (B, K, D)."""
        if self.gather_before_projector:
            return projector(gather_tokens(features, indices))
        return gather_tokens(projector(features), indices)


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, N, C) and (B, K) int64 → (B, K, C): the rows ``indices`` names, per batch entry."""
    return tokens.gather(1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def random_init_(module: nn.Module, seed: int, std: float = 0.02) -> None:
    """Fills a module built on the meta device with seeded random weights: N(0, std) matrices, zero biases,
    unit norm scales. Used for the default architecture and tests; fast even at CLIP-L size."""
    generator = torch.Generator().manual_seed(seed)
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(_owner(module, name), nn.LayerNorm):
                param.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf == "bias":
                param.zero_()
            else:
                param.normal_(0.0, std, generator=generator)


def _owner(module: nn.Module, param_name: str) -> nn.Module:
    owner_name = param_name.rsplit(".", 1)[0] if "." in param_name else ""
    return module.get_submodule(owner_name)
