"""Exported ONNX on ONNX Runtime against transformers' eager model + the paper-loop oracle."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from oracle import paper_select, reference_embeds, reference_scores

from hiprune.api import ExportRequest, export
from hiprune.artifacts import sha256_file
from hiprune.config import HiPruneConfig
from hiprune.graphs import select_op
from hiprune.runtime import OrtRunner

# (checkpoint geometry, keep, alpha, object layer, neighbours, batch)
CASES = [
    (dict(), 8, 0.1, None, "paper", 1),  # anchors = round(0.16) = 0
    (dict(), 10, 0.5, 1, "paper", 3),  # a = 1
    (dict(image_size=40), 15, 1.0, 2, "paper", 1),  # 5x5 grid, a = 3, overlap in the buffer set
    (dict(image_size=40), 20, 0.5, 2, "grid", 3),  # true 2-D neighbours
    (dict(image_size=56, layers=6), 30, 0.4, 3, "paper", 1),  # 7x7 grid, deeper tower, a = round(2.4) = 2
    (dict(image_size=56, layers=6), 49, 0.2, 4, "grid", 3),  # K = N
    (dict(layers=6, feature_layer=-1), 1, 0.0, 5, "paper", 1),  # K = 1, feature layer = last
]


def _oracle(model, pixel_values, resolved):
    s_obj, s_deep, hidden = reference_scores(model, pixel_values, resolved["object_layer"], resolved["deep_layer"])
    h = resolved
    indices = paper_select(s_obj, s_deep, h["keep"], h["alpha"], resolved["grid_width"], h["neighbors"])
    feature_layer = model.config.vision_feature_layer
    return indices, reference_embeds(model, pixel_values, indices, feature_layer, hidden)


@pytest.mark.parity("llava-clip")
@pytest.mark.parametrize(("geometry", "keep", "alpha", "layer", "neighbors", "batch"), CASES)
def test_ort_matches_oracle(tiny_checkpoint, reference_model, tmp_path, geometry, keep, alpha, layer, neighbors, batch):
    path = tiny_checkpoint(**geometry)
    config = HiPruneConfig(keep=keep, alpha=alpha, object_layer=layer, neighbors=neighbors)
    result = export(ExportRequest(hiprune=config, model=str(path), batch=batch, output=tmp_path / "out"))
    manifest = result.manifest
    h = {**manifest["hiprune"], "grid_width": manifest["encoder"]["grid"][1]}
    model = reference_model(path)
    size = model.config.vision_config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(11)) * 2
    with torch.no_grad():
        want_indices, want_embeds = _oracle(model, pixel_values, h)
    with OrtRunner(result.artifact) as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
    np.testing.assert_array_equal(got["indices"], want_indices.numpy())
    assert np.abs(got["image_embeds"] - want_embeds.numpy()).max() <= 1e-4
    assert got["image_embeds"].shape == (batch, keep, 48)


def test_graph_contract(tiny_checkpoint, tmp_path):
    """One custom-domain Select node with a local function; static dims; metadata; manifest hashes."""
    path = tiny_checkpoint()
    result = export(
        ExportRequest(hiprune=HiPruneConfig(keep=6, alpha=0.5), model=str(path), batch=2, output=tmp_path / "out")
    )
    model = onnx.load(result.artifact)
    custom = [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    assert [(n.domain, n.op_type) for n in custom] == [(select_op.DOMAIN, select_op.OP_TYPE)]
    assert [(f.domain, f.name) for f in model.functions] == [(select_op.DOMAIN, select_op.OP_TYPE)]
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims and all(d.HasField("dim_value") for d in dims), value.name
    assert [v.name for v in model.graph.input] == ["pixel_values"]
    assert [v.name for v in model.graph.output] == ["image_embeds", "indices"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["hiprune.keep"] == "6" and props["hiprune.source"] == str(path) and props["hiprune.anchors"] == "1"
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.onnx.data"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(result.output / name)
    assert manifest["verification"]["indices_equal"] is True


def test_no_prune_keeps_every_token(tiny_checkpoint, reference_model, tmp_path):
    path = tiny_checkpoint()
    result = export(ExportRequest(hiprune=HiPruneConfig(prune=False), model=str(path), output=tmp_path / "full"))
    model = onnx.load(result.artifact)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node) and not model.functions
    ref = reference_model(path)
    pixel_values = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        hidden = ref.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        want = ref.model.multi_modal_projector(hidden[-2][:, 1:])
    with OrtRunner(result.artifact) as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
    np.testing.assert_array_equal(got["indices"], np.arange(16)[None])
    assert np.abs(got["image_embeds"] - want.numpy()).max() <= 1e-4
    props = {p.key: p.value for p in model.metadata_props if p.key.startswith("hiprune.")}
    assert props.get("hiprune.prune") == "false"
    assert not {"hiprune.keep", "hiprune.alpha", "hiprune.anchors", "hiprune.object_layer"} & set(props)
    assert result.manifest["hiprune"] == {"prune": False}
