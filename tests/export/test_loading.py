"""Checkpoint loading: key layouts, shards, only vision + projector tensors read, and every refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hiprune.config import HiPruneConfig
from hiprune.errors import CheckpointError
from hiprune.export.models import load_encoder

CONFIG = HiPruneConfig(keep=6, alpha=0.5)


def _copy_config(src, dst):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")


def _run(encoder, seed=2):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return encoder(x)


def _relayout(src, dst, rename, split_language_model=False):
    """Writes ``src``'s tensors under new names, optionally with the language model in a shard of its own."""
    _copy_config(src, dst)
    tensors = {rename(k): v.contiguous() for k, v in load_file(src / "model.safetensors").items()}
    if not split_language_model:
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
        return dst
    shards = {"model-00001-of-00002.safetensors": {}, "model-00002-of-00002.safetensors": {}}
    for name, tensor in tensors.items():
        shard = "model-00002-of-00002.safetensors" if "language_model" in name else "model-00001-of-00002.safetensors"
        shards[shard][name] = tensor
    weight_map = {}
    for shard, part in shards.items():
        save_file(part, dst / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


@pytest.mark.parametrize("layout", ["hub-v4", "internal-v5"])
def test_key_layouts_and_shards_load_the_same_encoder(tiny_checkpoint, tmp_path, layout):
    src = tiny_checkpoint()
    if layout == "hub-v4":  # llava-hf checkpoints: vision_tower.vision_model.*, language_model.model.*

        def rename(k):
            return k.replace("vision_tower.", "vision_tower.vision_model.", 1)
    else:  # model.vision_tower.*, model.multi_modal_projector.*, model.language_model.*

        def rename(k):
            return "model." + k if not k.startswith("lm_head") else k

    dst = _relayout(src, tmp_path / layout, rename, split_language_model=True)
    # the language model's shard is never opened: corrupting it changes nothing
    (dst / "model-00002-of-00002.safetensors").write_bytes(b"not a safetensors file")
    want = _run(load_encoder(str(src), CONFIG).encoder)
    got = _run(load_encoder(str(dst), CONFIG).encoder)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_layers_after_the_feature_layer_are_not_read(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint()  # 4 layers, feature layer -2 → layer 4 and post_layernorm are never needed
    dst = _relayout(src, tmp_path / "cut", lambda k: k)
    tensors = {
        k: v
        for k, v in load_file(dst / "model.safetensors").items()
        if not k.startswith(("vision_tower.encoder.layers.3.", "vision_tower.post_layernorm"))
    }
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    encoder = load_encoder(str(dst), CONFIG).encoder
    assert len(encoder.trunk.encoder.layers) == 3


def test_hub_id_from_local_cache(tiny_checkpoint, tmp_path, monkeypatch):
    import huggingface_hub.constants

    src = tiny_checkpoint()
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llava" / "snapshots" / "0123abc"
    shutil.copytree(src, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_encoder("tiny-org/tiny-llava", CONFIG)
    assert loaded.source["path"] == str(snapshot)
    assert torch.equal(_run(loaded.encoder)[1], _run(load_encoder(str(src), CONFIG).encoder)[1])


def test_hub_id_not_in_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="not in the hub cache.*hf download nobody/nothing"):
        load_encoder("nobody/nothing", CONFIG)


def test_non_vlm_checkpoint_names_what_is_supported(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "c")
    with pytest.raises(
        CheckpointError, match=r"model_type 'clip_vision_model' is not a supported VLM; supported: LLaVA-1.5"
    ):
        load_encoder(str(tmp_path / "c"), CONFIG)


def test_corrupt_weights(tiny_checkpoint, tmp_path):
    dst = tmp_path / "bad"
    _copy_config(tiny_checkpoint(), dst)
    (dst / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors cannot be read.*re-download"):
        load_encoder(str(dst), CONFIG)


def test_pickle_weights_need_allow_pickle(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint()
    dst = tmp_path / "pickle"
    _copy_config(src, dst)
    torch.save(load_file(src / "model.safetensors"), dst / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle.*--allow-pickle"):
        load_encoder(str(dst), CONFIG)
    got = _run(load_encoder(str(dst), CONFIG, allow_pickle=True).encoder)
    assert torch.equal(got[1], _run(load_encoder(str(src), CONFIG).encoder)[1])


def test_missing_directory():
    with pytest.raises(CheckpointError, match="no such directory"):
        load_encoder("./does/not/exist", CONFIG)


def test_unsupported_feature_strategy(tiny_checkpoint, tmp_path):
    dst = tmp_path / "full"
    shutil.copytree(tiny_checkpoint(), dst)
    config = json.loads((dst / "config.json").read_text())
    config["vision_feature_select_strategy"] = "full"
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="strategy 'full' is not supported"):
        load_encoder(str(dst), CONFIG)
