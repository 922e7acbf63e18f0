"""LLaVA with a SigLIP tower (no CLS): exported ONNX on ORT vs transformers' eager tower + the paper-loop oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import paper_select, reference_embeds, reference_scores

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.export.adapters import LlavaSiglipAdapter, adapter_for
from hiprune.runtime import OrtRunner

# (checkpoint geometry, keep, alpha, object layer, batch)
CASES = [
    (dict(image_size=36, feature_layer=-1), 6, 0.5, None, 2),  # 36/8 → 4x4 (floor, as 384/14 → 27), a = 1
    (dict(image_size=40, layers=6, feature_layer=-2), 10, 0.0, 3, 1),  # 5x5, deep layer 5 of 6, a = 0
    (dict(image_size=40, layers=6, feature_layer=-1), 25, 1.0, 2, 1),  # K = N, a = 5, buffers overlap
]


@pytest.mark.parity("llava-siglip")
@pytest.mark.parametrize(("geometry", "keep", "alpha", "layer", "batch"), CASES)
def test_ort_matches_oracle(tiny_checkpoint, reference_model, tmp_path, geometry, keep, alpha, layer, batch):
    path = tiny_checkpoint(tower="siglip", **geometry)
    config = HiPruneConfig(keep=keep, alpha=alpha, object_layer=layer)
    result = export(ExportRequest(hiprune=config, model=str(path), batch=batch, output=tmp_path / "out"))
    h = result.manifest["hiprune"]
    width = result.manifest["encoder"]["grid"][1]
    model = reference_model(path)
    size = model.config.vision_config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(11)) * 2
    with torch.no_grad():
        s_obj, s_deep, hidden = reference_scores(model, pixel_values, h["object_layer"], h["deep_layer"])
        want_indices = paper_select(s_obj, s_deep, keep, alpha, width)
        want_embeds = reference_embeds(model, pixel_values, want_indices, model.config.vision_feature_layer, hidden)
    with OrtRunner(result.artifact) as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
    assert s_deep.shape[1] == (size // 8) ** 2  # every patch column scored: no CLS to drop
    np.testing.assert_array_equal(got["indices"], want_indices.numpy())
    assert np.abs(got["image_embeds"] - want_embeds.numpy()).max() <= 1e-4


def test_spec_and_tensors_read(tiny_checkpoint):
    """Grid from image/patch, deep layer = the feature layer's, depth-scaled object layer; post-layernorm and the
    pooling head are never read."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_checkpoint(tower="siglip", image_size=36, feature_layer=-1))
    adapter = adapter_for(config, "tiny")
    assert isinstance(adapter, LlavaSiglipAdapter)
    spec = adapter.spec
    assert (spec.grid, spec.num_layers, spec.deep_layer, spec.default_object_layer) == ((4, 4), 4, 4, 1)
    assert adapter.module_name("model.vision_tower.encoder.layers.3.mlp.fc1.weight") is not None
    for name in ("model.vision_tower.post_layernorm.weight", "model.vision_tower.head.probe"):
        assert adapter.module_name(name) is None
