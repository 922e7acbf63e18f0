"""Tiny LLaVA checkpoints with what the chain needs beside the weights: a local tokenizer and an image processor."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest

TINY_VOCAB = 128
TINY_IMAGE_TOKEN_ID = TINY_VOCAB - 1


def add_text_side(directory: Path) -> Path:
    """Adds a character-level tokenizer (``<image>`` = config.image_token_id) and a CLIP processor to a checkpoint."""
    from transformers import AutoConfig

    from hiprune.runtime.defaults import build_char_tokenizer, clip_image_processor_class

    config = AutoConfig.from_pretrained(directory)
    config.image_token_id = TINY_IMAGE_TOKEN_ID
    config.text_config.eos_token_id = 2
    config.save_pretrained(directory)
    build_char_tokenizer(TINY_VOCAB, TINY_IMAGE_TOKEN_ID).save_pretrained(directory)
    size = config.vision_config.image_size
    processor = clip_image_processor_class()(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor.save_pretrained(directory)
    return directory


@functools.cache
def _with_text_side(source: Path, root: str) -> Path:
    target = Path(root) / source.name
    shutil.copytree(source, target)
    return add_text_side(target)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory, tiny_checkpoint):
    """``tiny_vlm(seed=1, image_size=40)`` → a saved tiny LLaVA with tokenizer and image processor."""
    root = str(tmp_path_factory.mktemp("vlms"))
    return lambda **kwargs: _with_text_side(tiny_checkpoint(**kwargs), root)


def make_photo(size: int = 64, seed: int = 0) -> np.ndarray:
    """A synthetic RGB photo: smooth gradients, a bright disc and noise, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05).astype(float)
    channels = [x, y, 0.5 * (x + y)]
    image = np.stack([c * 0.7 + 0.3 * disc for c in channels], axis=-1) + rng.normal(0, 0.05, (size, size, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def photo_file(tmp_path):
    """A PNG of :func:`photo` on disk."""
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(make_photo(72, seed=3)).save(path)
    return path


@pytest.fixture(scope="session")
def photo():
    """``photo(size, seed)`` → a synthetic (H, W, 3) uint8 RGB photo."""
    return make_photo
