"""Output comparison with per-target tolerances in one table, reporting every output that fails."""

from __future__ import annotations

import dataclasses

import numpy as np

# (target, precision) → max |Δ| allowed on image_embeds. Indices must always be equal.
EMBED_ATOL: dict[tuple[str, str], float] = {
    ("onnx", "fp32"): 1e-4,
}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How far a runtime's outputs are from the PyTorch module's on the same input."""

    indices_equal: bool
    index_mismatches: int
    max_abs: float
    max_rel: float  # max|Δ| / max|reference|
    min_cosine: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.indices_equal and self.max_abs <= self.atol

    def describe(self) -> str:
        return (
            f"indices {'equal' if self.indices_equal else f'differ at {self.index_mismatches} positions'}, "
            f"embeds max|Δ| {self.max_abs:.2e} (atol {self.atol:.0e}), relative to max|ref| {self.max_rel:.2e}, "
            f"min cosine {self.min_cosine:.6f}"
        )


def compare_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float) -> Comparison:
    ref_idx, act_idx = reference["indices"], actual["indices"].astype(np.int64)
    ref_emb = reference["image_embeds"].astype(np.float64)
    act_emb = actual["image_embeds"].astype(np.float64)
    diff = np.abs(ref_emb - act_emb)
    mismatches = int((ref_idx != act_idx).sum()) if ref_idx.shape == act_idx.shape else ref_idx.size
    flat_ref, flat_act = ref_emb.reshape(-1, ref_emb.shape[-1]), act_emb.reshape(-1, act_emb.shape[-1])
    norms = np.linalg.norm(flat_ref, axis=-1) * np.linalg.norm(flat_act, axis=-1)
    cosine = (flat_ref * flat_act).sum(-1) / np.maximum(norms, 1e-30)
    return Comparison(
        indices_equal=mismatches == 0,
        index_mismatches=mismatches,
        max_abs=float(diff.max()),
        max_rel=float(diff.max() / max(float(np.abs(ref_emb).max()), 1e-30)),
        min_cosine=float(cosine.min()),
        atol=atol,
    )
