"""The HiPrune selection as one torch custom op: ``torch.ops.hiprune.select``.

This module is the single source of truth for what the graphs compute. The eager kernel is the spec's
static-budget form (``hiprune-spec.md``): anchors by the object layer's score, their flat-index (or 2-D)
neighbours as buffers, and the rest of the budget filled by the deep layer's score, all with static shapes:

    prio = s_deep with prio[anchors ∪ buffers] = +inf
    keep = sort_ascending(topk(prio, K))

``+inf`` is above every possible score at any scale (LLaVA's means and Qwen's column sums alike).
Ties break toward the lower index everywhere, as ONNX TopK documents (here through keys that order like a
stable sort, see :func:`stable_order_keys`).
Paths that cannot keep a custom op (Core ML) use :func:`select_topk_form`, the same selection in their ops.
"""

from __future__ import annotations

import torch

OP_NAMESPACE = "hiprune"
OP_NAME = "select"
NEIGHBOR_OFFSETS = 5  # the anchor itself, -1, +1, -W, +W


def received_attention(probs: torch.Tensor, prefix_tokens: int = 1) -> torch.Tensor:
    """Score of a layer: attention *received* by each patch token, averaged over heads and all queries.

    Args:
        probs: softmax attention probabilities, (B, heads, T, T), with ``prefix_tokens`` non-patch tokens first.
        prefix_tokens: tokens before the patch grid whose columns are dropped (1 for CLIP's CLS, 0 for SigLIP).
            They still count as queries: the reference averages over every query.

    Returns:
        (B, T - prefix_tokens) float scores.
    """
    received = probs.mean(dim=1).mean(dim=1)
    return received[:, prefix_tokens:] if prefix_tokens else received  # a no-op slice traces to an alias node


def buffer_candidates(anchor_idx: torch.Tensor, num_tokens: int, grid_width: int, grid: bool) -> torch.Tensor:
    """Anchors and their four neighbours, (B, 5a) int64; ``-1`` marks a neighbour that does not exist.

    ``grid=False`` is the reference code's flat-index form: ±1 wraps across row ends and out-of-range
    neighbours are clamped to tokens 0 / N-1. ``grid=True`` keeps only true 2-D neighbours.
    """
    a, w = anchor_idx, grid_width
    cand = torch.stack([a, a - 1, a + 1, a - w, a + w], dim=-1)
    if grid:
        col = a % w
        valid = torch.stack([a >= 0, col > 0, col < w - 1, a >= w, a + w < num_tokens], dim=-1)
        cand = torch.where(valid, cand, torch.full_like(cand, -1))
    else:
        cand = cand.clamp(0, num_tokens - 1)
    return cand.flatten(1)


def select_static(
    s_obj: torch.Tensor, s_deep: torch.Tensor, keep: int, anchors: int, grid_width: int, grid_neighbors: bool
) -> torch.Tensor:
    """The static-budget selection in plain torch ops: (B, N) scores → (B, K) int64 ascending indices.

    No full sort, for the GPU: each top-k is one ``topk`` (a radix *select*) over keys that order like a stable
    descending sort (:func:`stable_order_keys`), and only the K kept indices are sorted at the end. Index for
    index equal to sorting stably (tests hold it to the oracle).
    """
    num_tokens = s_deep.shape[-1]
    prio = s_deep
    if anchors > 0:
        anchor_idx = stable_order_keys(s_obj).topk(anchors, dim=-1, sorted=False).indices
        cand = buffer_candidates(anchor_idx, num_tokens, grid_width, grid_neighbors)
        positions = torch.arange(num_tokens, device=s_deep.device)
        prio = s_deep.masked_fill((cand.unsqueeze(-1) == positions).any(dim=1), float("inf"))
    kept = stable_order_keys(prio).topk(keep, dim=-1, sorted=False).indices
    return kept.sort(dim=-1).values


def stable_order_keys(scores: torch.Tensor) -> torch.Tensor:
    """int64 keys, unique per row, whose descending order is a stable descending sort of ``scores``.

    The high 32 bits are the float32 score's bits made order-preserving as a signed integer (negative floats
    have their magnitude bits flipped; -0.0 is first made +0.0, which compares equal); the low 32 bits rank
    the position so that among equal scores the lower index is larger.
    """
    bits = (scores.float() + 0.0).view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    n = scores.shape[-1]
    return ordered.to(torch.int64) * (1 << 32) + torch.arange(n - 1, -1, -1, device=scores.device)


@torch.library.custom_op(f"{OP_NAMESPACE}::{OP_NAME}", mutates_args=())
def select(
    s_obj: torch.Tensor, s_deep: torch.Tensor, keep: int, anchors: int, grid_width: int, grid_neighbors: bool
) -> torch.Tensor:
    """HiPrune selection (see module docstring); kept as one node by tracers."""
    return select_static(s_obj, s_deep, keep, anchors, grid_width, grid_neighbors)


@select.register_fake
def _select_fake(
    s_obj: torch.Tensor, s_deep: torch.Tensor, keep: int, anchors: int, grid_width: int, grid_neighbors: bool
) -> torch.Tensor:
    return s_deep.new_empty((s_deep.shape[0], keep), dtype=torch.int64)


def select_topk_form(
    s_obj: torch.Tensor, s_deep: torch.Tensor, keep: int, anchors: int, grid_width: int, grid_neighbors: bool
) -> torch.Tensor:
    """The same selection in the ops Core ML's mlprogram has (``topk``, ``scatter``, ``gather``, ``sort``).

    Differences from :func:`select_static` are in form only: buffer tokens are raised to +inf with a scatter
    (missing 2-D neighbours point at their anchor, which is in the set anyway), and ``topk`` replaces the stable
    sort. The kept set is the same whenever scores have no exact ties; among exactly equal scores the
    backend's ``topk`` decides.
    """
    num_tokens = s_deep.shape[-1]
    prio = s_deep
    if anchors > 0:
        anchor_idx = torch.topk(s_obj, anchors, dim=-1).indices
        cand = buffer_candidates(anchor_idx, num_tokens, grid_width, grid_neighbors)
        owner = anchor_idx.unsqueeze(-1).expand(-1, -1, NEIGHBOR_OFFSETS).flatten(1)
        cand = torch.where(cand < 0, owner, cand)
        prio = s_deep.scatter(1, cand, torch.full(cand.shape, float("inf"), dtype=s_deep.dtype, device=s_deep.device))
    return torch.sort(torch.topk(prio, keep, dim=-1).indices, dim=-1).values
