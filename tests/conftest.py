"""Tiny LLaVA-1.5 checkpoints built from configs, saved and loaded by path like real ones (never downloaded)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def tiny_llava_config(
    image_size: int = 32, patch_size: int = 8, layers: int = 4, feature_layer: int = -2, tower: str = "clip"
):
    """A tiny LLaVA config: ``tower="clip"`` (LLaVA-1.5) or ``"siglip"`` (no CLS, strategy ``full``)."""
    from transformers import CLIPVisionConfig, LlavaConfig, SiglipVisionConfig

    vision_class = {"clip": CLIPVisionConfig, "siglip": SiglipVisionConfig}[tower]
    vision = vision_class(**_tiny_vision(image_size, patch_size, layers))
    strategy = "full" if tower == "siglip" else "default"
    return LlavaConfig(
        vision_config=vision,
        text_config=_tiny_text(),
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
    )


def _tiny_vision(image_size: int, patch_size: int, layers: int) -> dict:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )


def _tiny_text():
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=128,
    )


NEXT_PINPOINTS = [[32, 64], [64, 32], [64, 64], [32, 96]]  # 32x32 tiles: 1x2, 2x1, 2x2 (default), 1x3


def tiny_next_config(layers: int = 4, feature_layer: int = -2):
    """A tiny LLaVA-NeXT config: CLIP tower of 32x32 views (4x4 patches), four grid pinpoints."""
    from transformers import CLIPVisionConfig, LlavaNextConfig

    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_tiny_vision(32, 8, layers)),
        text_config=_tiny_text(),
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=NEXT_PINPOINTS,
    )


def make_tiny_llava(directory: Path, seed: int = 0, tower: str = "clip", **config_kwargs) -> Path:
    """Saves a random tiny LLaVA (vision tower, projector and a 1-layer language model) with save_pretrained;
    ``tower="next"`` saves a LLaVA-NeXT."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    if tower == "next":
        model = LlavaNextForConditionalGeneration(tiny_next_config(**config_kwargs)).eval()
    else:
        model = LlavaForConditionalGeneration(tiny_llava_config(tower=tower, **config_kwargs)).eval()
    _sharpen_attention(model, seed)
    _scale_projector(model)
    model.save_pretrained(directory)
    return directory


def _sharpen_attention(model, seed: int) -> None:
    """Random ViT inits give near-uniform attention; larger q/k weights give scores far apart, like real towers."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, attn in model.model.vision_tower.named_modules():
            if name.endswith("self_attn"):
                for proj in (attn.q_proj, attn.k_proj):
                    proj.weight.normal_(0.0, 0.5, generator=generator)


def _scale_projector(model, factor: float = 30.0) -> None:
    """Random inits give image embeddings of about 1e-2; scaled to about 1, an embeddings tolerance of 1e-4 is
    one of about 1e-4 relative, so a precision loss (an fp16 round trip, say) fails the parity tests."""
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.mul_(factor)


@functools.cache
def _cached_checkpoint(root: str, key: tuple) -> Path:
    kwargs = dict(key)
    name = "tiny-" + "-".join(f"{k}{v}" for k, v in key)
    return make_tiny_llava(Path(root) / name, **kwargs)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(image_size=40, layers=6)`` → a saved checkpoint directory (built once per session)."""
    root = str(tmp_path_factory.mktemp("checkpoints"))

    def build(**kwargs) -> Path:
        return _cached_checkpoint(root, tuple(sorted(kwargs.items())))

    return build


@functools.cache
def _reference_model(path: str):
    from transformers import AutoConfig, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    is_next = AutoConfig.from_pretrained(path).model_type == "llava_next"
    model_class = LlavaNextForConditionalGeneration if is_next else LlavaForConditionalGeneration
    return model_class.from_pretrained(path, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def reference_model():
    """transformers' own LLaVA / LLaVA-NeXT (eager attention) for a checkpoint path: the oracle's scores."""
    return lambda path: _reference_model(str(path))
