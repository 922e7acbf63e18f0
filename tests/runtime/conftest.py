"""Tiny LLaVA checkpoints with what the chain needs beside the weights: a local tokenizer and an image processor."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest

TINY_VOCAB = 128
TINY_IMAGE_TOKEN_ID = TINY_VOCAB - 1


def add_text_side(directory: Path, layout: str = "image-processor") -> Path:
    """Adds a character-level tokenizer (``<image>`` = config.image_token_id) and a CLIP processor to a checkpoint.

    Args:
        layout: ``"image-processor"``: tokenizer and image processor saved one by one (``preprocessor_config.json``).
            ``"processor"``: one ``LlavaProcessor.save_pretrained``, as transformers 5 saves a fine-tuned checkpoint
            (``processor_config.json`` with the image processor nested inside, no ``preprocessor_config.json``).
    """
    from transformers import AutoConfig

    from hiprune.runtime.defaults import build_char_tokenizer, clip_image_processor_class

    config = AutoConfig.from_pretrained(directory)
    config.image_token_id = TINY_IMAGE_TOKEN_ID
    config.text_config.eos_token_id = 2
    config.save_pretrained(directory)
    tokenizer = build_char_tokenizer(TINY_VOCAB, TINY_IMAGE_TOKEN_ID)
    size = config.vision_config.image_size
    processor = clip_image_processor_class()(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    if layout == "processor":
        from transformers import LlavaProcessor

        patch = config.vision_config.patch_size
        llava = LlavaProcessor(
            processor,
            tokenizer,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        llava.save_pretrained(directory)
        assert not (directory / "preprocessor_config.json").exists()
        return directory
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@functools.cache
def _with_text_side(source: Path, root: str, layout: str) -> Path:
    target = Path(root) / f"{source.name}-{layout}"
    shutil.copytree(source, target)
    return add_text_side(target, layout)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory, tiny_checkpoint):
    """``tiny_vlm(seed=1, image_size=40, layout="image-processor")`` → a saved tiny LLaVA with tokenizer and image
    processor (``layout``: see :func:`add_text_side`)."""
    root = str(tmp_path_factory.mktemp("vlms"))

    def make(layout: str = "image-processor", **kwargs):
        return _with_text_side(tiny_checkpoint(**kwargs), root, layout)

    return make


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
