"""HiPrune settings: one dataclass, validated in one place, with the spec's arithmetic."""

from __future__ import annotations

import dataclasses
from typing import Literal

from hiprune.errors import ConfigError

Neighbors = Literal["paper", "grid"]
NEIGHBOR_MODES: tuple[str, ...] = ("paper", "grid")
DEFAULT_ALPHA = 0.1


def anchor_count(keep: int, alpha: float) -> int:
    """Number of anchor tokens, ``round(K * alpha / 5)`` with Python's (banker's) rounding, as the paper's code."""
    return round(keep * alpha / 5)


LAYOUTS: tuple[str, ...] = ("paper",)  # crop layouts implemented; "stock" (unpad + image_newline) is refused


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
    """Encoder geometry chosen at export time (LLaVA-NeXT crops); ``None`` means the checkpoint's default.

    Attributes:
        resolution: ``"HxW"``, one of the checkpoint's grid pinpoints (the crops the artifact takes).
        layout: the order of the kept crop tokens; ``paper`` is the reference's ``spatial`` merge.
    """

    resolution: str | None = None
    layout: str | None = None


@dataclasses.dataclass(frozen=True)
class HiPruneConfig:
    """What the selection keeps.

    Attributes:
        keep: the token budget K per image.
        alpha: share of the budget spent on anchors and their buffers (anchors = round(K * alpha / 5)).
        object_layer: 1-based ViT layer whose attention picks anchors; ``None`` means the encoder's default.
        neighbors: ``paper`` (flat-index neighbours with the reference code's wrap/clamp) or ``grid`` (true 2-D).
        prune: ``False`` exports the same truncated encoder + projector keeping every token (the baseline).
    """

    keep: int = 64
    alpha: float = DEFAULT_ALPHA
    object_layer: int | None = None
    neighbors: Neighbors = "paper"
    prune: bool = True

    @property
    def anchors(self) -> int:
        return anchor_count(self.keep, self.alpha)

    def validate_static(self) -> None:
        """Checks that need no model: alpha's range, the neighbour mode, a positive budget."""
        if self.neighbors not in NEIGHBOR_MODES:
            raise ConfigError(f"--neighbors {self.neighbors!r} is not known; use one of: {', '.join(NEIGHBOR_MODES)}")
        if not self.prune:
            self._check_no_prune()
            return
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha} is outside [0, 1]; pass a share of the budget such as 0.1")
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep} must be at least 1; pass the number of visual tokens to keep")

    def _check_no_prune(self) -> None:
        """``--no-prune`` keeps every token: a budget, alpha, object layer or neighbour mode would be recorded
        but never applied, so any of them set away from its default is refused."""
        default = HiPruneConfig()
        given = [
            f"--{field.name.replace('_', '-')} {getattr(self, field.name)}"
            for field in dataclasses.fields(self)
            if field.name != "prune" and getattr(self, field.name) != getattr(default, field.name)
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} does not apply with --no-prune, which keeps every token; "
                "drop it, or drop --no-prune to prune"
            )

    def validate_for(self, num_tokens: int, views: int = 1) -> None:
        """All checks, against an encoder with ``num_tokens`` patch tokens (N) in each of ``views`` crops.

        With crops (LLaVA-NeXT) the budget is split as the reference does: k = ⌊K / views⌋ per crop, each with
        its own a = round(k * alpha / 5) anchors.
        """
        self.validate_static()
        if not self.prune:
            return
        total = num_tokens * views
        if self.keep > total:
            where = f"N = {num_tokens} patch tokens" if views == 1 else f"{views} crops x {num_tokens} = {total} tokens"
            raise ConfigError(
                f"--keep {self.keep} is more than the encoder's {where} "
                f"(alpha {self.alpha}, anchors a = {self.anchors}); pass --keep between 1 and {total}, "
                "or --no-prune to keep them all"
            )
        if views > 1:
            self._validate_per_crop(views)
            return
        a = self.anchors
        if 5 * a > self.keep:
            raise ConfigError(
                f"--keep {self.keep} is too small for alpha {self.alpha}: anchors a = round(K*alpha/5) = {a} "
                f"and their buffers need up to 5a = {5 * a} tokens; raise --keep to at least {5 * a} or lower --alpha"
            )

    def _validate_per_crop(self, views: int) -> None:
        k = self.keep // views
        if k < 1:
            raise ConfigError(
                f"--keep {self.keep} leaves k = floor(K/{views}) = 0 tokens for each of the {views} crops; "
                f"pass --keep at least {views}"
            )
        a = anchor_count(k, self.alpha)
        if 5 * a > k:
            raise ConfigError(
                f"--keep {self.keep} over {views} crops keeps k = {k} per crop, too small for alpha {self.alpha}: "
                f"anchors a = round(k*alpha/5) = {a} and their buffers need up to 5a = {5 * a} tokens per crop; "
                f"raise --keep to at least {views * 5 * a} or lower --alpha"
            )

    def as_metadata(self) -> dict[str, str]:
        """The settings as flat strings, for ONNX metadata_props and manifests (``prune`` only without pruning)."""
        if not self.prune:
            return {"hiprune.prune": "false"}
        return {
            "hiprune.prune": str(self.prune).lower(),
            "hiprune.keep": str(self.keep),
            "hiprune.alpha": repr(self.alpha),
            "hiprune.anchors": str(self.anchors),
            "hiprune.object_layer": str(self.object_layer),
            "hiprune.neighbors": self.neighbors,
        }
