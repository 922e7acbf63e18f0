"""Preprocessing on the encoder's device: the torchvision backend of the checkpoint's image processor."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hiprune.runtime.defaults import default_image_processor
from hiprune.runtime.preprocess import disagreement, on_device, preprocess, texture_probe

SHAPE = (1, 3, 336, 336)


def test_the_torchvision_twin_keeps_the_settings_and_makes_the_same_pixels_on_a_device(photo):
    pytest.importorskip("torchvision")
    pil = default_image_processor()
    twin, why = on_device(pil)
    assert why is None and type(pil).__name__ == "CLIPImageProcessorPil" and type(twin).__name__ == "CLIPImageProcessor"
    for setting in ("size", "crop_size", "resample", "image_mean", "image_std", "rescale_factor", "do_center_crop"):
        assert getattr(twin, setting) == getattr(pil, setting), setting
    assert on_device(twin) == (twin, None)
    image = photo(400, seed=2)[:, 40:]  # not square: the resize and the centre crop both act
    host = preprocess(twin, image, SHAPE)
    made = preprocess(twin, image, SHAPE, device="cpu")
    assert isinstance(made, torch.Tensor) and made.dtype == torch.float32 and made.device.type == "cpu"
    np.testing.assert_array_equal(made.numpy(), host)
    # the two backends resize with their own bicubic kernels: close, not bit-equal (normalised units, std ~0.27)
    assert np.abs(host - preprocess(pil, image, SHAPE)).mean() < 1e-3


def test_without_torchvision_there_is_no_device_processor(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now raises ImportError
    twin, why = on_device(default_image_processor())
    assert twin is None and why.startswith("torchvision cannot be imported")


def test_the_probe_tells_torchvision_bicubic_apart_from_bilinear():
    """What the chain's probe check rests on: the two backends' bicubic agree closely, bilinear does not."""
    pytest.importorskip("torchvision")
    pil = default_image_processor()
    twin, _ = on_device(pil)
    settings = {k: v for k, v in twin.to_dict().items() if k not in ("image_processor_type", "processor_class")}
    bilinear = type(twin)(**{**settings, "resample": 2})
    probe, host = texture_probe(), preprocess(pil, texture_probe(), SHAPE)
    assert disagreement(preprocess(twin, probe, SHAPE, device="cpu").numpy(), host) is None
    assert disagreement(preprocess(bilinear, probe, SHAPE, device="cpu").numpy(), host) is not None


def test_disagreement_bounds_the_mean_and_the_largest_pixel_gap():
    host = np.linspace(-1.8, 2.1, 3 * 336 * 336, dtype=np.float32).reshape(SHAPE)
    assert disagreement(host + 1e-4, host) is None
    assert disagreement(host + 0.004, host) is None
    assert disagreement(host + 0.006, host) == "mean |Δ| 0.0060, max 0.006"  # the mean bound
    spike = host.copy()
    spike[0, 1, 100, 100] += 0.09
    assert disagreement(spike, host).endswith("max 0.090")  # one pixel past the max bound


def test_a_checkpoint_saved_through_its_processor_preprocesses_with_its_own_settings(tiny_vlm, tmp_path, photo):
    """transformers 5's ``LlavaProcessor.save_pretrained`` writes ``processor_config.json`` only: the chain's loader
    takes the nested image processor (48 px here, not the built-in default's 336) and makes transformers' pixels."""
    from transformers import AutoImageProcessor

    from hiprune.runtime.preprocess import load_image_processor

    checkpoint = tiny_vlm(image_size=48, layout="processor")
    empty_artifact = tmp_path / "artifact"
    empty_artifact.mkdir()
    processor = load_image_processor(empty_artifact, str(checkpoint))
    want = AutoImageProcessor.from_pretrained(str(checkpoint))(images=photo(80, seed=4), return_tensors="np")
    got = preprocess(processor, photo(80, seed=4), (1, 3, 48, 48))
    np.testing.assert_array_equal(got, want["pixel_values"])


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("processor_config.json", "{not json", "processor_config.json cannot be read"),
        ("preprocessor_config.json", "[1, 2]", "preprocessor_config.json holds no image processor settings"),
        ("tokenizer_config.json", "{}", "no preprocessor_config.json or processor_config.json in artifact"),
    ],
)
def test_a_missing_or_broken_processor_file_is_one_line_naming_it(tmp_path, name, text, needle):
    from hiprune.errors import CheckpointError
    from hiprune.runtime.preprocess import load_image_processor

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / name).write_text(text)
    with pytest.raises(CheckpointError) as caught:
        load_image_processor(tmp_path, str(checkpoint))
    message = str(caught.value)
    assert needle in message and "\n" not in message
