"""The artifact's I/O contract: names, shapes and dtypes of what goes in and comes out, in one object.

Every exported artifact takes ``pixel_values`` and returns ``image_embeds`` and ``indices``; only this module
spells those names. Targets, the manifest writer, runners and output comparisons read an :class:`IOContract`
(or the name constants) instead. No heavy imports: the CLI and manifests use it without torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

PIXEL_VALUES = "pixel_values"
IMAGE_EMBEDS = "image_embeds"
INDICES = "indices"
INPUT_NAMES = (PIXEL_VALUES,)
OUTPUT_NAMES = (IMAGE_EMBEDS, INDICES)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: its name, static shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.dtype} {self.shape}"

    def as_manifest(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class IOContract:
    """What an artifact of one export takes and returns; static shapes throughout.

    Attributes:
        batch: images per call (the static batch).
        image_shape: one image's ``pixel_values`` without the batch axis: (3, H, W), or (views, 3, H, W) for
            families that take several crops per image (LLaVA-NeXT).
        kept: K, tokens per image in ``image_embeds`` and ``indices`` (N with ``--no-prune``).
        num_tokens: N, patch tokens the encoder produces for one image (over all its views) before selection.
        embed_dim: D, width of ``image_embeds`` (the language model's embedding size).
        embeds_dtype: ``image_embeds``'s dtype in this artifact (float32 unless the target says otherwise).
        indices_dtype: ``indices``'s dtype in this artifact (int64 unless the target says otherwise).
    """

    batch: int
    image_shape: tuple[int, ...]
    kept: int
    num_tokens: int
    embed_dim: int
    embeds_dtype: str = "float32"
    indices_dtype: str = "int64"

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of one view."""
        return self.image_shape[-2], self.image_shape[-1]

    @property
    def views(self) -> int:
        """Views per image: 1, or the base view + tiles of a LLaVA-NeXT artifact."""
        return self.image_shape[0] if len(self.image_shape) == 4 else 1

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return (TensorInfo(PIXEL_VALUES, (self.batch, *self.image_shape), "float32"),)

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return (
            TensorInfo(IMAGE_EMBEDS, (self.batch, self.kept, self.embed_dim), self.embeds_dtype),
            TensorInfo(INDICES, (self.batch, self.kept), self.indices_dtype),
        )

    @property
    def pixel_values(self) -> TensorInfo:
        return self.inputs[0]

    def tensor(self, name: str) -> TensorInfo:
        """The input or output called ``name``."""
        for info in (*self.inputs, *self.outputs):
            if info.name == name:
                return info
        raise KeyError(f"{name!r} is not an input or output; the contract has {[*INPUT_NAMES, *OUTPUT_NAMES]}")

    def with_dtypes(self, embeds: str | None = None, indices: str | None = None) -> IOContract:
        """The same contract with the artifact's own output dtypes (Core ML: float16 embeds, int32 indices)."""
        return dataclasses.replace(
            self, embeds_dtype=embeds or self.embeds_dtype, indices_dtype=indices or self.indices_dtype
        )

    def feed(self, pixel_values: Any) -> dict[str, Any]:
        """A runner feed for ``pixel_values``."""
        return {PIXEL_VALUES: pixel_values}

    def name_outputs(self, embeds: Any, indices: Any) -> dict[str, Any]:
        """Outputs in the order a module returns them, keyed by their graph names."""
        return {IMAGE_EMBEDS: embeds, INDICES: indices}

    def as_manifest(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``inputs`` and ``outputs`` sections."""
        return {
            "inputs": {info.name: info.as_manifest() for info in self.inputs},
            "outputs": {info.name: info.as_manifest() for info in self.outputs},
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> IOContract:
        """The contract a manifest records (for runners over an artifact directory)."""
        pixel = manifest["inputs"][PIXEL_VALUES]
        embeds, indices = manifest["outputs"][IMAGE_EMBEDS], manifest["outputs"][INDICES]
        return cls(
            batch=pixel["shape"][0],
            image_shape=tuple(pixel["shape"][1:]),
            kept=indices["shape"][1],
            num_tokens=manifest["encoder"]["num_tokens"],
            embed_dim=embeds["shape"][2],
            embeds_dtype=embeds["dtype"],
            indices_dtype=indices["dtype"],
        )
