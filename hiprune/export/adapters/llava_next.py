"""LLaVA-NeXT (anyres) with a CLIP tower, ``--layout paper``: the reference's crops, budget split and merge.

One artifact serves one grid pinpoint (``--resolution HxW``; default the square pinpoint with the most tiles).
``pixel_values`` is (B, 1 + tiles, 3, S, S) as ``LlavaNextImageProcessor`` produces it for an image whose best
resolution is that pinpoint: the base view, then the tiles row-major. All views go through the tower as one
batch, one ``hiprune::Select`` selects k = ⌊K / views⌋ tokens in each, and the kept tokens come out in the
paper's layout (the reference's ``spatial`` merge): the base view's (raster), then the tiles' in row-major order
of the stitched tile grid. ``indices`` index [base grid | stitched grid]: tile (ti, tj), patch (r, c) is
``N + (ti*gh + r) * (cols*gw) + tj*gw + c``. No unpadding and no ``image_newline`` in this layout.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector

from hiprune.config import LAYOUTS, EncoderOptions
from hiprune.errors import CheckpointError, ConfigError
from hiprune.export.adapters.base import CropGrid, EncoderSpec, gather_tokens
from hiprune.export.adapters.llava_clip import LlavaClipAdapter

RESOLUTION = re.compile(r"^(\d+)x(\d+)$")


class LlavaNextAdapter(LlavaClipAdapter):
    name: ClassVar[str] = "llava-next"
    description: ClassVar[str] = "LLaVA-NeXT (model_type 'llava_next' with a CLIP vision tower)"
    model_type: ClassVar[str] = "llava_next"

    def __init__(self, config: Any, options: EncoderOptions | None = None) -> None:
        super().__init__(config, options)
        self.table = tile_table(self.spec)  # constants, made here so that tracing sees tensors, not ops
        self.full_order = torch.argsort(self.table.flatten())

    def check_options(self) -> None:
        layout = self.options.layout
        if layout == "stock":
            raise ConfigError(
                "--layout stock (unpadded tiles with image_newline, transformers' pack_image_features) is not "
                "implemented yet; use --layout paper (the paper's spatial merge, the default)"
            )
        if layout is not None and layout not in LAYOUTS:
            raise ConfigError(f"--layout {layout!r} is not known; use one of: {', '.join(LAYOUTS)}")

    def read_spec(self) -> EncoderSpec:
        spec = super().read_spec()
        pinpoints = self._pinpoints(spec.image_size)
        resolution = self._resolution(pinpoints)
        tiles = (resolution[0] // spec.image_size[0], resolution[1] // spec.image_size[1])
        crops = CropGrid(resolution, tiles, self.options.layout or LAYOUTS[0])
        return dataclasses.replace(spec, crops=crops)

    def _pinpoints(self, tile: tuple[int, int]) -> list[tuple[int, int]]:
        raw = getattr(self.config, "image_grid_pinpoints", None) or []
        pinpoints = [(int(h), int(w)) for h, w in raw]
        bad = [p for p in pinpoints if p[0] % tile[0] or p[1] % tile[1]]
        if not pinpoints or bad:
            raise CheckpointError(
                f"image_grid_pinpoints {raw!r} must list (H, W) multiples of the tower's {tile[0]}x{tile[1]} tiles"
            )
        return pinpoints

    def _resolution(self, pinpoints: list[tuple[int, int]]) -> tuple[int, int]:
        """``--resolution`` if given (it must be a pinpoint), else the square pinpoint with the most tiles."""
        given = self.options.resolution
        if given is None:
            squares = [p for p in pinpoints if p[0] == p[1]] or pinpoints
            return max(squares, key=lambda p: p[0] * p[1])
        match = RESOLUTION.match(given.strip().lower())
        allowed = ", ".join(f"{h}x{w}" for h, w in pinpoints)
        if match is None or (int(match[1]), int(match[2])) not in pinpoints:
            raise ConfigError(
                f"--resolution {given} is not one of this checkpoint's grid pinpoints (HxW); use one of: {allowed}"
            )
        return int(match[1]), int(match[2])

    def make_projector(self) -> nn.Module:
        return LlavaNextMultiModalProjector(self.config)

    def fold(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.flatten(0, 1)

    def unfold(self, embeds: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views, kept = self.spec.views, indices.shape[1]
        batch = indices.shape[0] // views
        embeds = embeds.reshape(batch, views, kept, embeds.shape[-1])
        indices = indices.reshape(batch, views, kept)
        tile_embeds = embeds[:, 1:].flatten(1, 2)
        if kept == self.spec.num_tokens:  # every token kept: the stitched order is a fixed permutation
            order = self.full_order
            tiles = self.table.flatten()[order].expand(batch, -1)
            tile_embeds = tile_embeds[:, order]
        else:
            stitched = self.table.expand(batch, -1, -1).gather(2, indices[:, 1:]).flatten(1)
            order = ascending_order(stitched)
            tiles = stitched.gather(1, order)
            tile_embeds = gather_tokens(tile_embeds, order)
        return torch.cat([embeds[:, 0], tile_embeds], dim=1), torch.cat([indices[:, 0], tiles], dim=1)


def tile_table(spec: EncoderSpec) -> torch.Tensor:
    """(tiles, N) int64: a tile's patch index → its index in [base grid | stitched tile grid]."""
    assert spec.crops is not None
    (gh, gw), cols = spec.grid, spec.crops.tiles[1]
    patch = torch.arange(spec.num_tokens)
    tile = torch.arange(spec.views - 1)
    row = (tile // cols).unsqueeze(1) * gh + (patch // gw).unsqueeze(0)
    col = (tile % cols).unsqueeze(1) * gw + (patch % gw).unsqueeze(0)
    return spec.num_tokens + row * (cols * gw) + col


def ascending_order(values: torch.Tensor) -> torch.Tensor:
    """(B, M) distinct integers → the permutation that sorts each row ascending, in integer ops only.

    rank[i] = #{j : v[j] < v[i]}; order[p] = the i with rank[i] = p. Integer compares and sums, not TopK:
    TensorRT's TopK takes floats only, and fp16 graphs would round indices above 2048.
    """
    rank = (values.unsqueeze(1) < values.unsqueeze(2)).sum(dim=2)
    positions = torch.arange(values.shape[1], device=values.device)
    hits = rank.unsqueeze(1) == positions.view(1, -1, 1)
    return (hits * positions.view(1, 1, -1)).sum(dim=2)
