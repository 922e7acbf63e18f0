"""LLaVA-NeXT (anyres, ``--layout paper``): exported ONNX on ORT vs transformers' eager NeXT tower + the reference's
per-crop loop and spatial merge; crop geometry, refusals, and the image processor's tensor as the input."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import NEXT_PINPOINTS
from oracle import paper_next

from hiprune.api import ExportRequest, export
from hiprune.cli import main
from hiprune.config import EncoderOptions, HiPruneConfig
from hiprune.errors import HiPruneError
from hiprune.graphs import select_op
from hiprune.runtime import OrtRunner

# (resolution, tiles, keep, alpha, object layer, prune, batch)
CASES = [
    (None, (2, 2), 14, 0.5, None, True, 2),  # default 64x64: 5 crops, K = 14 → k = 2 (10 kept), a = 0
    ("32x96", (1, 3), 30, 0.5, 2, True, 1),  # 1x3 tiles (rows != cols), k = 7, a = round(0.7) = 1
    ("64x32", (2, 1), 48, 1.0, 1, True, 2),  # 2x1 tiles, k = 16 = N (every token), a = 3
    ("64x64", (2, 2), 64, 0.1, None, False, 1),  # --no-prune: all 80 tokens in the paper layout
]


def _export(path, tmp_path, resolution=None, batch=1, **hiprune):
    return export(
        ExportRequest(
            hiprune=HiPruneConfig(**hiprune),
            model=str(path),
            batch=batch,
            output=tmp_path / "out",
            encoder=EncoderOptions(resolution=resolution),
        )
    )


def _assert_close(got, want):
    """max|Δ| ≤ 1e-4, and relative to the embeddings' own scale (tiny random projectors give small values)."""
    delta = np.abs(got - want.numpy()).max()
    assert delta <= 1e-4 and delta <= 1e-4 * np.abs(want.numpy()).max()


def _score_layers(h):
    """The manifest's layers; a --no-prune manifest records none (any layers: the oracle then keeps every token)."""
    return (h["object_layer"], h["deep_layer"]) if h["prune"] else (1, 2)


@pytest.mark.parity("llava-next")
@pytest.mark.parametrize(("resolution", "tiles", "keep", "alpha", "layer", "prune", "batch"), CASES)
def test_ort_matches_oracle(
    tiny_checkpoint, reference_model, tmp_path, resolution, tiles, keep, alpha, layer, prune, batch
):
    path = tiny_checkpoint(tower="next")
    result = _export(path, tmp_path, resolution, batch, keep=keep, alpha=alpha, object_layer=layer, prune=prune)
    views = 1 + tiles[0] * tiles[1]
    assert result.manifest["inputs"]["pixel_values"]["shape"] == [batch, views, 3, 32, 32]
    h = result.manifest["hiprune"]
    pixel_values = torch.randn(batch, views, 3, 32, 32, generator=torch.Generator().manual_seed(11)) * 2
    with torch.no_grad():
        want_indices, want_embeds = paper_next(
            reference_model(path), pixel_values, keep, alpha, *_score_layers(h), tiles, prune
        )
    with OrtRunner(result.artifact) as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
    nodes = [n.op_type for n in onnx.load(result.artifact).graph.node if n.domain == select_op.DOMAIN]
    assert nodes == (["Select"] if prune else [])  # one node covers every crop (crops folded into the batch)
    kept = views * (keep // views if prune else 16)
    assert got["indices"].shape == (batch, kept) and result.manifest["encoder"]["kept"] == kept
    np.testing.assert_array_equal(got["indices"], want_indices.numpy())
    _assert_close(got["image_embeds"], want_embeds)


def test_processor_output_is_the_input(tiny_checkpoint, reference_model, tmp_path):
    """``LlavaNextImageProcessor``'s tensor for an image whose best resolution is the pinpoint feeds the artifact
    as is (base view first, then the tiles row-major); a wrong crop count is a one-line error in the runner."""
    from PIL import Image
    from transformers import LlavaNextImageProcessorPil

    processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=NEXT_PINPOINTS
    )
    pixels = np.random.default_rng(3).integers(0, 256, (30, 90, 3), dtype=np.uint8)
    pixel_values = processor(images=Image.fromarray(pixels), return_tensors="pt")["pixel_values"]
    path = tiny_checkpoint(tower="next")
    result = _export(path, tmp_path, "32x96", keep=12, alpha=0.5)
    with torch.no_grad():
        want_indices, want_embeds = paper_next(reference_model(path), pixel_values, 12, 0.5, 1, 3, (1, 3))
    with OrtRunner(result.artifact) as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
        with pytest.raises(
            HiPruneError, match=r"^input .pixel_values. is float32\[1, 3, 3, 32, 32\]; .*\[1, 4, 3, .* --resolution\)$"
        ):
            runner.infer({"pixel_values": pixel_values.numpy()[:, :3]})
    np.testing.assert_array_equal(got["indices"], want_indices.numpy())
    _assert_close(got["image_embeds"], want_embeds)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layout", "stock"], r"--layout stock \(unpadded tiles with image_newline.*use --layout paper"),
        (["--layout", "grid"], r"--layout 'grid' is not known; use one of: paper"),
        (["--resolution", "48x48"], r"--resolution 48x48 is not one of .* use one of: 32x64, 64x32, 64x64, 32x96"),
        (["--keep", "4"], r"--keep 4 leaves k = floor\(K/5\) = 0 tokens for each of the 5 crops; .* at least 5"),
        (["--keep", "9", "--alpha", "1.0"], r"--keep 9 over 3 crops keeps k = 3 per crop, .* a = .* = 1 .*"),
    ],
)
def test_refusals_are_one_line(tiny_checkpoint, tmp_path, args, message):
    path = tiny_checkpoint(tower="next")
    if "--alpha" in args:
        args = [*args, "--resolution", "64x32"]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--target", "onnx", "--model", str(path), "--output", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not out.exists()


def test_resolution_is_refused_for_one_view_families(tiny_checkpoint, tmp_path):
    args = ["--target", "onnx", "--model", str(tiny_checkpoint()), "--resolution", "64x64", "--output", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--resolution 64x64 applies to LLaVA-NeXT checkpoints only" in result.output


def test_paper_budget_and_default_pinpoint_on_the_7b_geometry():
    """LLaVA-v1.6's own geometry (CLIP-L/336, its five pinpoints): 672x672 by default; K = 640 over 3 crops keeps
    639, as the reference's int(K / n_crops) does; K = 320 over 5 crops keeps 64 each with 1 anchor."""
    from transformers import LlavaNextConfig

    from hiprune.export.adapters import adapter_for
    from hiprune.export.encoder import plan_selection

    config = LlavaNextConfig()
    spec = adapter_for(config, "v1.6").spec
    assert (spec.crops.resolution, spec.crops.tiles, spec.input_shape) == ((672, 672), (2, 2), (5, 3, 336, 336))
    resolved = plan_selection(HiPruneConfig(keep=320), spec)
    assert (resolved.view_keep, resolved.view_anchors, resolved.kept, resolved.deep_layer) == (64, 1, 320, 23)
    wide = adapter_for(config, "v1.6", EncoderOptions(resolution="336x672")).spec
    assert wide.crops.tiles == (1, 2) and plan_selection(HiPruneConfig(keep=640), wide).kept == 639


def test_only_the_tower_up_to_the_feature_layer_and_the_projector_are_read():
    from transformers import LlavaNextConfig

    from hiprune.export.adapters import adapter_for

    adapter = adapter_for(LlavaNextConfig(), "v1.6")
    read = adapter.module_name
    assert read("vision_tower.vision_model.encoder.layers.22.mlp.fc1.weight") is not None  # layer 23 of 24
    assert read("model.multi_modal_projector.linear_2.weight") == "projector.linear_2.weight"
    for name in (
        "vision_tower.vision_model.encoder.layers.23.mlp.fc1.weight",  # after the feature layer
        "vision_tower.vision_model.post_layernorm.weight",
        "image_newline",
        "model.image_newline",
        "language_model.model.layers.0.mlp.up_proj.weight",
        "model.language_model.embed_tokens.weight",
    ):
        assert read(name) is None, name


def test_contract_from_the_manifest_knows_the_views(tiny_checkpoint, tmp_path):
    from hiprune.contract import IOContract

    result = _export(tiny_checkpoint(tower="next"), tmp_path, "32x96", keep=8, alpha=0.5)
    io = IOContract.from_manifest(result.manifest)
    assert (io.views, io.image_size, io.image_shape, io.kept, io.num_tokens) == (4, (32, 32), (4, 3, 32, 32), 8, 64)
