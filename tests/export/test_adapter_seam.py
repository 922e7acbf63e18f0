"""The adapter seam: score extraction and the projector/gather order belong to the adapter."""

from __future__ import annotations

import torch
from torch import nn

from hiprune.config import HiPruneConfig
from hiprune.export.adapters import adapter_for
from hiprune.export.encoder import build_encoder


class _TokenMixer(nn.Module):
    """A projector that is not per-token (each output row sees its neighbours), like a patch merger."""

    def forward(self, x):
        return x + x.roll(1, dims=1)


def _adapter(**overrides):
    adapter = adapter_for(_tiny_config(), "test")
    for key, value in overrides.items():
        setattr(adapter, key, value)
    return adapter


def _tiny_config():
    from conftest import tiny_llava_config

    return tiny_llava_config()


def test_prefix_tokens_decide_the_score_columns():
    probs = torch.softmax(torch.randn(2, 4, 17, 17, generator=torch.Generator().manual_seed(0)), dim=-1)
    received = probs.mean(dim=1).mean(dim=1)
    assert torch.equal(_adapter().scores(probs), received[:, 1:])
    assert torch.equal(_adapter(prefix_tokens=0).scores(probs), received)


def test_projector_order_is_the_adapters():
    features = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    indices = torch.tensor([[0, 3, 9], [1, 2, 15]])
    mixer = _TokenMixer()
    want = torch.stack([mixer(features)[b, indices[b]] for b in range(2)])
    assert torch.equal(_adapter(gather_before_projector=False).project_kept(mixer, features, indices), want)
    assert not torch.allclose(_adapter().project_kept(mixer, features, indices), want)


def test_per_token_projector_gives_the_same_embeddings_either_way():
    """For LLaVA's MLP, gathering first (the default, cheaper) is equivalent to projecting every token."""
    adapter = _adapter()
    encoder = build_encoder(adapter, HiPruneConfig(keep=5), tensors=None)
    features = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(2))
    indices = torch.tensor([[0, 5, 6, 11, 15]])
    with torch.no_grad():
        first = adapter.project_kept(encoder.projector, features, indices)
        adapter.gather_before_projector = False
        last = adapter.project_kept(encoder.projector, features, indices)
    assert torch.allclose(first, last, atol=1e-5)
