"""``PrunedEncoder``: vision trunk → ``hiprune::select`` → gather → projector, as one traceable module."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import hiprune.selection  # noqa: F401  (registers torch.ops.hiprune.select)
from hiprune.config import HiPruneConfig, anchor_count
from hiprune.errors import ConfigError
from hiprune.export.adapters import EncoderAdapter, EncoderSpec, VisionTrunk


@dataclasses.dataclass(frozen=True)
class SelectionPlan:
    """The HiPrune settings bound to one encoder: the user's :class:`HiPruneConfig` with its defaults filled in
    (``object_layer`` resolved once, here) plus the encoder geometry the selection needs.

    Attributes:
        hiprune: the settings, ``object_layer`` never ``None``.
        deep_layer: 1-based feature layer, whose attention gives the register score.
        grid_width: W of the patch grid (neighbours of an anchor).
        num_tokens: N, patch tokens before selection.
    """

    hiprune: HiPruneConfig
    deep_layer: int
    grid_width: int
    num_tokens: int  # N of one view
    views: int = 1  # crops per image (LLaVA-NeXT), each with its own share of the budget

    @property
    def view_keep(self) -> int:
        """Tokens kept per view: k = ⌊K / views⌋, as the reference splits the budget over crops."""
        return self.hiprune.keep // self.views

    @property
    def view_anchors(self) -> int:
        """Anchors per view: round(k * alpha / 5)."""
        return anchor_count(self.view_keep, self.hiprune.alpha)

    @property
    def object_layer(self) -> int:
        return int(self.hiprune.object_layer or 0)

    @property
    def kept(self) -> int:
        """Tokens per image in the output: views * k (may be below K with crops), or every token unpruned."""
        return self.views * (self.view_keep if self.hiprune.prune else self.num_tokens)

    def as_metadata(self) -> dict[str, str]:
        """The settings as flat strings (ONNX metadata_props, package metadata); anchors are per view."""
        metadata = {**self.hiprune.as_metadata(), "hiprune.anchors": str(self.view_anchors)}
        if self.views > 1:
            metadata.update({"hiprune.crops": str(self.views), "hiprune.keep_per_crop": str(self.view_keep)})
        return metadata


def plan_selection(hiprune: HiPruneConfig, spec: EncoderSpec) -> SelectionPlan:
    """Validates ``hiprune`` against the encoder and fills the object layer's default."""
    hiprune.validate_for(spec.num_tokens, spec.views)
    layer = spec.default_object_layer if hiprune.object_layer is None else hiprune.object_layer
    if hiprune.prune and not 1 <= layer < spec.deep_layer:
        raise ConfigError(
            f"--object-layer {layer} is outside 1..{spec.deep_layer - 1}: it must be a layer of the tower before "
            f"the feature layer ({spec.deep_layer} of {spec.num_layers}); the paper uses 9 for CLIP ViT-L"
        )
    filled = dataclasses.replace(hiprune, object_layer=layer)
    return SelectionPlan(filled, spec.deep_layer, spec.grid[1], spec.num_tokens, spec.views)


class PrunedEncoder(nn.Module):
    """``pixel_values`` (B, 3, H, W) float32, normalized → ``image_embeds`` (B, K, D) and ``indices`` (B, K) int64.

    With crops (LLaVA-NeXT) ``pixel_values`` is (B, views, 3, H, W) and the outputs hold views * k tokens per
    image. With ``prune=False`` the same trunk and projector keep all N tokens of every view. How views fold into
    the batch and back, how scores and features come out of the trunk, and whether the projector runs before or
    after the gather is the adapter's business (:class:`~hiprune.export.adapters.EncoderAdapter`).
    """

    def __init__(self, adapter: EncoderAdapter, trunk: VisionTrunk, projector: nn.Module, plan: SelectionPlan) -> None:
        super().__init__()
        self.adapter = adapter
        self.trunk = trunk
        self.projector = projector
        self.plan = plan
        self.input_shape = adapter.spec.input_shape  # one image's pixel_values, no batch axis

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, scores = self.trunk(self.adapter.fold(pixel_values))
        cfg = self.plan
        if not cfg.hiprune.prune:
            indices = torch.arange(cfg.num_tokens, device=features.device).expand(features.shape[0], -1)
            return self.adapter.unfold(self.projector(features), indices)
        s_obj, s_deep = scores
        indices = torch.ops.hiprune.select(
            s_obj, s_deep, cfg.view_keep, cfg.view_anchors, cfg.grid_width, cfg.hiprune.neighbors == "grid"
        )
        return self.adapter.unfold(self.adapter.project_kept(self.projector, features, indices), indices)


def example_input(encoder: PrunedEncoder, batch: int) -> torch.Tensor:
    """A normalized-looking ``pixel_values`` tensor of the encoder's static shape for tracing (seed 0; the checks
    run on :func:`hiprune.runtime.compare.check_input`)."""
    return torch.randn(batch, *encoder.input_shape, generator=torch.Generator().manual_seed(0))


def build_encoder(
    adapter: EncoderAdapter, hiprune: HiPruneConfig, tensors: dict[str, torch.Tensor] | None, seed: int = 0
) -> PrunedEncoder:
    """Plans the selection for the adapter's encoder and assembles the module (random weights if no tensors)."""
    plan = plan_selection(hiprune, adapter.spec)
    score_layers = (plan.object_layer, plan.deep_layer) if hiprune.prune else ()
    trunk, projector = adapter.build(tensors, score_layers, seed=seed)
    return PrunedEncoder(adapter, trunk, projector, plan).eval()
