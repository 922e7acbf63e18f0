"""Output comparison against a reference, gated per output by one tolerance table, naming every failing output.

Kept sets are compared by index value, not by position: two selections that share 63 of 64 tokens share 63,
wherever the swapped token falls in raster order. Embeddings are compared on the tokens both sides kept, matched
by index value, and must pass all three gates (absolute, relative, cosine), so an output of zeros or noise at
the reference's scale cannot pass on a loose absolute bound alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hiprune.contract import IMAGE_EMBEDS, INDICES


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Gates for one (target, precision) against the fp32 PyTorch module.

    ``image_embeds`` pass when max|Δ| ≤ ``atol``, max|Δ| / max|reference| ≤ ``rtol`` and every compared token's
    cosine similarity ≥ ``min_cosine``. ``indices`` pass when, in every image, the two kept sets share at least
    ``min_overlap`` of the K tokens (1.0: the same set).
    """

    atol: float
    rtol: float
    min_cosine: float
    min_overlap: float = 1.0


# (target or graph, precision) → tolerance against the fp32 PyTorch module. The only tolerance table.
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("onnx", "fp32"): Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999),
    ("tensorrt", "fp32"): Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.9999),
    # reduced precision moves scores a little: near-ties may swap a few tokens
    ("tensorrt", "fp16"): Tolerance(atol=5e-2, rtol=1e-2, min_cosine=0.999, min_overlap=0.9),
    ("tensorrt", "bf16"): Tolerance(atol=2e-1, rtol=5e-2, min_cosine=0.99, min_overlap=0.8),
    ("coreml", "fp32"): Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.9999),
    ("coreml", "fp16"): Tolerance(atol=5e-2, rtol=1e-2, min_cosine=0.999, min_overlap=0.9),
}


CHECK_SEED = 1


def check_input(shape: tuple[int, ...]) -> np.ndarray:
    """The seeded standard-normal ``pixel_values`` every check runs on: the export's checks against PyTorch, the
    engine check of ``build-engine`` and ``check_reference.npz``, and ``compare.sh``'s data loader (which draws
    them with numpy alone, on a device without torch)."""
    return np.random.default_rng(CHECK_SEED).standard_normal(shape, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How far one graph's outputs are from a reference's on the same input, and which gates they fail.

    ``what`` names the two sides ("model.onnx on ONNX Runtime CPU vs PyTorch fp32"); ``kept_overlap`` is the
    fewest tokens any image's two kept sets share, out of ``kept``; embedding numbers cover the shared tokens.
    """

    what: str
    tolerance: Tolerance
    kept: int
    indices_equal: bool
    kept_overlap: int
    min_jaccard: float
    compared_tokens: int
    max_abs: float
    max_rel: float  # max|Δ| / max|reference| over the compared tokens
    min_cosine: float
    problems: tuple[str, ...] = ()  # shapes or values that make the outputs incomparable

    def failures(self) -> list[str]:
        """One phrase per failing output (empty when every gate passes)."""
        tol, failed = self.tolerance, list(self.problems)
        need = int(np.ceil(tol.min_overlap * self.kept - 1e-9))
        if self.kept_overlap < need:
            failed.append(
                f"{INDICES}: an image shares only {self.kept_overlap} of {self.kept} kept tokens "
                f"(Jaccard {self.min_jaccard:.3f}); at least {need} required"
            )
        embeds = []
        if not self.max_abs <= tol.atol:  # NaN fails every gate
            embeds.append(f"max|Δ| {self.max_abs:.2e} > atol {tol.atol:.0e}")
        if not self.max_rel <= tol.rtol:
            embeds.append(f"max|Δ|/max|ref| {self.max_rel:.2e} > rtol {tol.rtol:.0e}")
        if not self.min_cosine >= tol.min_cosine:
            embeds.append(f"min cosine {self.min_cosine:.6f} < {tol.min_cosine}")
        if embeds:
            failed.append(f"{IMAGE_EMBEDS}: " + ", ".join(embeds))
        return failed

    @property
    def ok(self) -> bool:
        return not self.failures()

    def describe(self) -> str:
        """One line: the two sides, then the failing outputs, or the numbers that passed."""
        failures = self.failures()
        if failures:
            return f"{self.what}: FAILED {'; '.join(failures)}"
        if self.indices_equal:
            kept = "indices equal"
        else:
            kept = f"kept sets share ≥ {self.kept_overlap} of {self.kept} (Jaccard ≥ {self.min_jaccard:.3f})"
        return (
            f"{self.what}: {kept}, embeds max|Δ| {self.max_abs:.2e} (atol {self.tolerance.atol:.0e}), "
            f"rel {self.max_rel:.2e} (rtol {self.tolerance.rtol:.0e}), "
            f"min cosine {self.min_cosine:.6f} (≥ {self.tolerance.min_cosine})"
        )


def compare_outputs(
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    tolerance: Tolerance,
    what: str = "outputs vs reference",
) -> Comparison:
    """Compares kept sets per image by index value, and embeddings on the tokens both sides kept."""
    ref_idx = np.asarray(reference[INDICES]).astype(np.int64)
    act_idx = np.asarray(actual[INDICES]).astype(np.int64)
    ref_emb = np.asarray(reference[IMAGE_EMBEDS], dtype=np.float64)
    act_emb = np.asarray(actual[IMAGE_EMBEDS], dtype=np.float64)
    problems = _shape_problems(ref_idx, act_idx, ref_emb, act_emb)
    kept = int(ref_idx.shape[-1]) if ref_idx.ndim else 0
    if problems:
        nan = float("nan")
        return Comparison(what, tolerance, kept, False, 0, 0.0, 0, nan, nan, nan, tuple(problems))
    overlaps, jaccards, rows_ref, rows_act = [], [], [], []
    for image in range(ref_idx.shape[0]):
        shared, at_ref, at_act = np.intersect1d(ref_idx[image], act_idx[image], return_indices=True)
        overlaps.append(len(shared))
        jaccards.append(len(shared) / len(np.union1d(ref_idx[image], act_idx[image])))
        rows_ref.append(ref_emb[image, at_ref])
        rows_act.append(act_emb[image, at_act])
    ref_rows, act_rows = np.concatenate(rows_ref), np.concatenate(rows_act)
    if not np.isfinite(act_emb).all():
        problems.append(f"{IMAGE_EMBEDS}: contains NaN or inf")
    problems += _order_problems(act_idx) + _unshared_problems(ref_emb, act_emb, ref_idx, act_idx, tolerance)
    max_abs, max_rel, min_cos = _embedding_errors(ref_rows, act_rows)
    return Comparison(
        what=what,
        tolerance=tolerance,
        kept=kept,
        indices_equal=bool(np.array_equal(ref_idx, act_idx)),
        kept_overlap=int(min(overlaps)),
        min_jaccard=float(min(jaccards)),
        compared_tokens=int(ref_rows.shape[0]),
        max_abs=max_abs,
        max_rel=max_rel,
        min_cosine=min_cos,
        problems=tuple(problems),
    )


def _shape_problems(ref_idx: np.ndarray, act_idx: np.ndarray, ref_emb: np.ndarray, act_emb: np.ndarray) -> list[str]:
    problems = []
    if ref_idx.shape != act_idx.shape:
        problems.append(f"{INDICES}: shape {act_idx.shape}, reference {ref_idx.shape}")
    if ref_emb.shape != act_emb.shape:
        problems.append(f"{IMAGE_EMBEDS}: shape {act_emb.shape}, reference {ref_emb.shape}")
    if not problems and (ref_idx.ndim != 2 or ref_emb.shape[:2] != ref_idx.shape):
        problems.append(f"{INDICES} {ref_idx.shape} and {IMAGE_EMBEDS} {ref_emb.shape} are not (B, K) and (B, K, D)")
    return problems


def _order_problems(act_idx: np.ndarray) -> list[str]:
    """The contract's order: every image's kept indices are non-negative and strictly ascending (raster order)."""
    if (act_idx < 0).any():
        return [f"{INDICES}: negative index {int(act_idx.min())}"]
    if act_idx.shape[-1] > 1 and not (np.diff(act_idx, axis=-1) > 0).all():
        return [f"{INDICES}: not strictly ascending in every image (duplicates or out of raster order)"]
    return []


def _unshared_problems(
    ref_emb: np.ndarray, act_emb: np.ndarray, ref_idx: np.ndarray, act_idx: np.ndarray, tolerance: Tolerance
) -> list[str]:
    """Tokens only the actual side kept have no reference row; they must at least stay at the reference's scale."""
    unshared = ~np.stack([np.isin(act_idx[i], ref_idx[i]) for i in range(act_idx.shape[0])])
    if not unshared.any() or not np.isfinite(act_emb).all():
        return []
    bound = float(np.abs(ref_emb).max()) * (1 + tolerance.rtol) + tolerance.atol
    largest = float(np.abs(act_emb[unshared]).max())
    if largest > bound:
        return [
            f"{IMAGE_EMBEDS}: a token only this side kept reaches {largest:.2e}, beyond the reference scale {bound:.2e}"
        ]
    return []


def _embedding_errors(ref_rows: np.ndarray, act_rows: np.ndarray) -> tuple[float, float, float]:
    """max|Δ|, max|Δ| / max|reference| and the smallest per-token cosine; NaN (failing every gate) if no rows."""
    if ref_rows.size == 0 or not np.isfinite(act_rows).all():
        return float("nan"), float("nan"), float("nan")
    diff = np.abs(ref_rows - act_rows)
    scale = float(np.abs(ref_rows).max())
    max_rel = float(diff.max()) / scale if scale > 0 else (0.0 if diff.max() == 0 else float("inf"))
    norms = np.linalg.norm(ref_rows, axis=-1) * np.linalg.norm(act_rows, axis=-1)
    both_zero = (np.abs(ref_rows).max(-1) == 0) & (np.abs(act_rows).max(-1) == 0)
    cosine = np.where(both_zero, 1.0, (ref_rows * act_rows).sum(-1) / np.maximum(norms, 1e-300))
    return float(diff.max()), max_rel, float(cosine.min())
