"""Output comparison with per-target tolerances in one table, reporting every output that fails."""

from __future__ import annotations

import dataclasses

import numpy as np

from hiprune.contract import IMAGE_EMBEDS, INDICES


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``atol`` bounds max|Δ| of image_embeds over tokens both sides kept; ``min_index_agreement`` is the
    share of index positions that must match (1.0: identical selection)."""

    atol: float
    min_index_agreement: float = 1.0


# (target or graph, precision) → tolerance against the fp32 PyTorch module.
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("onnx", "fp32"): Tolerance(1e-4),
    ("tensorrt", "fp32"): Tolerance(1e-3),
    # reduced precision moves scores a little: near-ties may swap a few tokens
    ("tensorrt", "fp16"): Tolerance(5e-2, min_index_agreement=0.9),
    ("tensorrt", "bf16"): Tolerance(2e-1, min_index_agreement=0.8),
    ("coreml", "fp32"): Tolerance(1e-3),
    ("coreml", "fp16"): Tolerance(5e-2, min_index_agreement=0.9),
}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How far a runtime's outputs are from the reference outputs on the same input."""

    indices_equal: bool
    index_mismatches: int
    index_agreement: float
    max_abs: float
    max_rel: float  # max|Δ| / max|reference|
    min_cosine: float
    atol: float
    min_index_agreement: float = 1.0

    @property
    def ok(self) -> bool:
        return self.index_agreement >= self.min_index_agreement and self.max_abs <= self.atol

    def describe(self) -> str:
        indices = "equal" if self.indices_equal else f"differ at {self.index_mismatches} positions"
        return (
            f"indices {indices}, embeds max|Δ| {self.max_abs:.2e} (atol {self.atol:.0e}), "
            f"relative to max|ref| {self.max_rel:.2e}, min cosine {self.min_cosine:.6f}"
        )


def compare_outputs(
    reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], tolerance: Tolerance
) -> Comparison:
    """Compares indices position by position, and embeds on the token positions whose indices agree."""
    ref_idx, act_idx = reference[INDICES], actual[INDICES].astype(np.int64)
    ref_emb = reference[IMAGE_EMBEDS].astype(np.float64)
    act_emb = actual[IMAGE_EMBEDS].astype(np.float64)
    same = ref_idx == act_idx if ref_idx.shape == act_idx.shape else np.zeros(ref_idx.shape, bool)
    mismatches = int((~same).sum())
    rows_ref, rows_act = ref_emb[same], act_emb[same]
    diff = np.abs(rows_ref - rows_act) if same.any() else np.full(1, np.inf)
    norms = np.linalg.norm(rows_ref, axis=-1) * np.linalg.norm(rows_act, axis=-1)
    cosine = (rows_ref * rows_act).sum(-1) / np.maximum(norms, 1e-30) if same.any() else np.zeros(1)
    return Comparison(
        indices_equal=mismatches == 0,
        index_mismatches=mismatches,
        index_agreement=float(same.mean()),
        max_abs=float(diff.max()),
        max_rel=float(diff.max() / max(float(np.abs(ref_emb).max()), 1e-30)),
        min_cosine=float(cosine.min()),
        atol=tolerance.atol,
        min_index_agreement=tolerance.min_index_agreement,
    )
