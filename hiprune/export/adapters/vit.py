"""The pre-norm ViT trunk CLIP and SigLIP towers share: embeddings, then encoder layers up to the feature layer.

Layers run transformers' own modules (``layer_norm1``, ``self_attn.{q,k,v,out}_proj``, ``layer_norm2``, ``mlp``)
with fused SDPA everywhere except the score layers, where the explicit softmax is kept so its probabilities can
be read. What a layer's probabilities mean as scores, and which hidden states are features, the adapter says.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hiprune.export.adapters.base import VisionTrunk

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


class VitTrunk(VisionTrunk):
    """Subclasses create ``embeddings`` and ``encoder`` (a :class:`Layers`) and implement :meth:`embed`.

    Args:
        score_layers: 1-based layers whose attention is scored, in the order the scores are returned.
        scores: the adapter's (B, heads, T, T) → (B, N) score extraction.
        features: the adapter's (B, T, C) → (B, N, C) feature extraction.
    """

    encoder: Layers

    def __init__(self, score_layers: tuple[int, ...], scores: ScoreFn, features: ScoreFn) -> None:
        super().__init__()
        self.score_layers = score_layers
        self._scores = scores
        self._features = features

    @abc.abstractmethod
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, T, C) tokens entering the first encoder layer."""

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x = self.embed(pixel_values)
        scores: dict[int, torch.Tensor] = {}
        for number, layer in enumerate(self.encoder.layers, start=1):
            x, probs = _layer_forward(layer, x, want_probs=number in self.score_layers)
            if probs is not None:
                scores[number] = self._scores(probs)
        return self._features(x), tuple(scores[n] for n in self.score_layers)


class Layers(nn.Module):
    """Holds ``layers`` so parameter names read ``encoder.layers.N.*`` as in transformers' vision models."""

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


def _layer_forward(layer: Any, x: torch.Tensor, want_probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    attn_out, probs = _attention(layer.self_attn, layer.layer_norm1(x), want_probs)
    x = x + attn_out
    return x + layer.mlp(layer.layer_norm2(x)), probs


def _attention(attn: Any, x: torch.Tensor, want_probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fused SDPA, or the explicit softmax where HiPrune reads the probabilities."""
    batch, tokens, width = x.shape
    heads = attn.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, tokens, heads, attn.head_dim).transpose(1, 2)

    q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
    probs = None
    if want_probs:
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * attn.scale, dim=-1)
        out = torch.matmul(probs, v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, width)), probs
