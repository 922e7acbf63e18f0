"""Images → ``pixel_values`` with the checkpoint's own image processor (``AutoImageProcessor``), read locally.

The processor config comes from the artifact directory (the export writes it there), else from the source
checkpoint, else, for the built-in default, LLaVA-1.5's settings built in code. Nothing downloads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hiprune.contract import PIXEL_VALUES
from hiprune.errors import CheckpointError, ConfigError, one_line

PROCESSOR_CONFIG = "preprocessor_config.json"
# transformers 5's processors (LlavaProcessor.save_pretrained, ...) write one file with the image processor's settings
# nested under "image_processor" and no PROCESSOR_CONFIG; AutoImageProcessor reads either layout.
NESTED_PROCESSOR_CONFIG = "processor_config.json"


def image_processor_settings(directory: Path) -> dict[str, Any] | None:
    """The image processor's settings saved in ``directory``: ``preprocessor_config.json``, else the
    ``image_processor`` entry of a processor's ``processor_config.json``; ``None`` where neither is there.

    Raises:
        CheckpointError: a file is there but is not JSON, or names no image processor settings.
    """
    for name, nested in ((PROCESSOR_CONFIG, False), (NESTED_PROCESSOR_CONFIG, True)):
        path = Path(directory) / name
        if not path.is_file():
            continue
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path} cannot be read ({one_line(exc)}); save the processor again") from None
        if nested:
            settings = settings.get("image_processor") if isinstance(settings, dict) else None
            if settings is None:
                continue
        if not isinstance(settings, dict):
            raise CheckpointError(f"{path} holds no image processor settings; save the processor again")
        return settings
    return None


def load_image_processor(artifact_dir: Path, checkpoint: str | None) -> Any:
    """The image processor for an artifact: its own saved config, the checkpoint's (either layout, see
    :func:`image_processor_settings`), or the built-in default's."""
    for directory in (Path(artifact_dir), None if checkpoint is None else Path(checkpoint)):
        if directory is None:
            continue
        settings = image_processor_settings(directory)
        if settings is not None:
            try:
                return _processor_from(directory, settings)
            except Exception as exc:
                raise CheckpointError(
                    f"the image processor in {directory} cannot be loaded ({one_line(exc)})"
                ) from None
    if checkpoint is None:
        from hiprune.runtime.defaults import default_image_processor

        return default_image_processor()
    raise CheckpointError(
        f"no {PROCESSOR_CONFIG} or {NESTED_PROCESSOR_CONFIG} in artifact {artifact_dir} or checkpoint {checkpoint}; "
        "save the checkpoint's processor there (AutoProcessor or AutoImageProcessor .save_pretrained)"
    )


def _processor_from(directory: Path, settings: dict[str, Any]) -> Any:
    """``AutoImageProcessor`` from a directory; where that needs a missing torchvision (transformers 5.1x), the
    named processor's PIL class, so preprocessing works with the declared dependencies alone."""
    import transformers

    try:
        return transformers.AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
    except ImportError:
        name = settings.get("image_processor_type") or ""
        pil = getattr(transformers, name.removesuffix("Fast").removesuffix("Pil") + "Pil", None) if name else None
        if pil is None:
            raise
        return pil.from_dict(settings)


def write_image_processor(checkpoint: str | None, directory: Path) -> str | None:
    """Puts the image processor's settings into an artifact directory as ``preprocessor_config.json``, so a device
    preprocesses without the checkpoint; a checkpoint saved in the nested layout gets its nested settings written.

    Returns the file name written, or ``None`` when the checkpoint has no image processor settings.
    """
    target = Path(directory) / PROCESSOR_CONFIG
    if checkpoint is None:
        from hiprune.runtime.defaults import default_image_processor

        default_image_processor().to_json_file(target)
        return PROCESSOR_CONFIG
    source = Path(checkpoint) / PROCESSOR_CONFIG
    if source.is_file():
        shutil.copyfile(source, target)
        return PROCESSOR_CONFIG
    settings = image_processor_settings(Path(checkpoint))
    if settings is None:
        return None
    target.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return PROCESSOR_CONFIG


def load_image(image: Any) -> Any:
    """A file path (decoded with PIL), a PIL image, or an (H, W, 3) uint8 / float array → an RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ConfigError(f"image array has shape {image.shape}; pass an (H, W, 3) RGB array")
        if image.dtype != np.uint8:
            image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
        return Image.fromarray(image, "RGB")
    path = Path(image)
    if not path.is_file():
        raise ConfigError(f"--image {path}: no such file; pass a path to a PNG/JPEG/... image")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        reason = one_line(exc)
        raise ConfigError(f"--image {path}: cannot be decoded as an image ({reason}); pass a PNG/JPEG") from None


def preprocess(processor: Any, image: Any, shape: tuple[int, ...], device: str | None = None) -> Any:
    """One image → float32 ``pixel_values`` of the artifact's input ``shape`` (1, 3, H, W).

    Args:
        device: ``None``: a numpy array made on the host. A torch device (with a torchvision-backend processor,
            see :func:`on_device`): a tensor resized and normalised on that device.
    """
    if device is None:
        pixel_values = processor(images=load_image(image), return_tensors="np")[PIXEL_VALUES].astype(np.float32)
    else:
        pixel_values = processor(images=load_image(image), return_tensors="pt", device=device)[PIXEL_VALUES].float()
    if tuple(pixel_values.shape) != tuple(shape):
        raise ConfigError(
            f"the image processor gives {PIXEL_VALUES} {list(pixel_values.shape)}, the artifact takes {list(shape)}; "
            "the artifact and its preprocessor_config.json disagree, re-export the artifact"
        )
    return np.ascontiguousarray(pixel_values) if device is None else pixel_values


def on_device(processor: Any) -> tuple[Any | None, str | None]:
    """``processor`` itself, or its torchvision-backend class with the same settings, which resizes and normalises
    on whatever device the pixels are sent to (a GPU: no host-side resize in the time to first token).

    Returns:
        ``(processor, None)``, or ``(None, why not)`` where torchvision is missing or unusable, or transformers
        has no torchvision class for this processor.
    """
    try:
        import torchvision  # noqa: F401
        import transformers
        from transformers.image_processing_backends import TorchvisionBackend
    except Exception as exc:  # not installed (ImportError), or built for another torch (RuntimeError)
        return None, f"torchvision cannot be imported ({one_line(exc)})"
    if isinstance(processor, TorchvisionBackend):
        return processor, None
    name = type(processor).__name__
    twin = getattr(transformers, name.removesuffix("Pil"), None)
    if not (isinstance(twin, type) and issubclass(twin, TorchvisionBackend)):
        return None, f"transformers has no torchvision backend for {name}"
    settings = {k: v for k, v in processor.to_dict().items() if k not in ("image_processor_type", "processor_class")}
    try:
        return twin(**settings), None
    except Exception as exc:
        return None, f"{twin.__name__} refuses {name}'s settings ({one_line(exc)})"


def disagreement(made: np.ndarray, host: np.ndarray) -> str | None:
    """How pixel values made on a device differ from the host processor's, or ``None`` where they agree to
    within the two bicubic kernels' gap: mean |Δ| <= 0.005 and max |Δ| <= 0.08 in normalised units (on
    :func:`texture_probe`, measured on the CPU: 1e-4 / 0.03 between the kernels, 0.027 / 0.12 for bilinear)."""
    gap = np.abs(np.asarray(made, dtype=np.float64) - host)
    if gap.mean() <= 0.005 and gap.max() <= 0.08:
        return None
    return f"mean |Δ| {gap.mean():.4f}, max {gap.max():.3f}"


def texture_probe(height: int = 300, width: int = 400) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 image with detail at a few pixels' period: resize kernels, crops and
    normalisations that differ show up in its pixel values (a smooth ramp would hide a kernel change)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 127.5 + 60 * np.sin(2 * np.pi * x / 7) + 60 * np.sin(2 * np.pi * y / 11)
    green = 127.5 + 100 * np.sin(2 * np.pi * (x + y) / 13)
    blue = 127.5 + 100 * np.cos(2 * np.pi * x * y / 5000)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)
