"""A port of the paper's per-image selection loop (the test oracle; never imported by the package).

Written independently of ``hiprune.selection``: Python lists and explicit loops, the reference code's
data-dependent register count ``K - |AB|``, ``unique`` over clamped flat-index neighbours, and ties broken
toward the lower index (ONNX TopK's documented rule, which the exported graphs follow).
"""

from __future__ import annotations

import torch


def _ranked(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def paper_select_one(
    s_obj: list[float], s_deep: list[float], keep: int, alpha: float, grid_width: int, neighbors: str = "paper"
) -> list[int]:
    n, w = len(s_deep), grid_width
    a = round(keep * alpha / 5)
    anchors = _ranked(s_obj)[:a]
    if neighbors == "paper":
        cand = (
            anchors
            + [x - 1 for x in anchors]
            + [x + 1 for x in anchors]
            + [x - w for x in anchors]
            + [x + w for x in anchors]
        )
        buffer = {min(max(x, 0), n - 1) for x in cand}
    else:
        buffer = set()
        for x in anchors:
            row, col = divmod(x, w)
            buffer.add(x)
            if col > 0:
                buffer.add(x - 1)
            if col < w - 1:
                buffer.add(x + 1)
            if row > 0:
                buffer.add(x - w)
            if x + w < n:
                buffer.add(x + w)
    registers = [i for i in _ranked(s_deep) if i not in buffer][: keep - len(buffer)]
    return sorted(buffer | set(registers))


def paper_select(
    s_obj: torch.Tensor, s_deep: torch.Tensor, keep: int, alpha: float, grid_width: int, neighbors: str = "paper"
) -> torch.Tensor:
    """(B, N) scores → (B, K) int64, each image with its own budget K."""
    rows = [
        paper_select_one(o.tolist(), d.tolist(), keep, alpha, grid_width, neighbors)
        for o, d in zip(s_obj, s_deep, strict=True)
    ]
    return torch.tensor(rows, dtype=torch.int64)


def _first_patch(model) -> int:
    """LLaVA's own rule: strategy ``default`` drops the tower's first token (CLS), ``full`` keeps every token."""
    return 1 if model.config.vision_feature_select_strategy == "default" else 0


def reference_scores(model: torch.nn.Module, pixel_values: torch.Tensor, object_layer: int, deep_layer: int):
    """Scores from transformers' own eager tower: attentions[l].mean(heads).mean(queries), CLS column dropped
    when the checkpoint's strategy drops CLS from the features (CLIP), every column kept otherwise (SigLIP)."""
    out = model.model.vision_tower(pixel_values, output_attentions=True, output_hidden_states=True)
    first = _first_patch(model)
    score = [a.mean(dim=1).mean(dim=1)[:, first:] for a in out.attentions]
    return score[object_layer - 1], score[deep_layer - 1], out.hidden_states


def reference_features(model, feature_layer: int, hidden_states) -> torch.Tensor:
    """projector(hidden_states[f][:, first patch:]) for every token, as LLaVA computes image features."""
    return model.model.multi_modal_projector(hidden_states[feature_layer][:, _first_patch(model) :])


def reference_embeds(model, pixel_values, indices, feature_layer: int, hidden_states) -> torch.Tensor:
    """projector(features)[keep], as LLaVA computes image features before pruning."""
    projected = reference_features(model, feature_layer, hidden_states)
    return projected.gather(1, indices.unsqueeze(-1).expand(-1, -1, projected.shape[-1]))


def paper_next(model, pixel_values, keep: int, alpha: float, object_layer: int, deep_layer: int, tiles, prune=True):
    """LLaVA-NeXT as the reference code does it: every crop through the tower, ``int(K / n_crops)`` kept per crop
    by the per-image loop, then the ``spatial`` merge — base tokens (raster), then the tiles' features
    (rows, cols, h, w) permuted to (rows, h, cols, w) and read row-major where the permuted keep mask is set.

    Returns (B, n*k) indices into [base grid | stitched tile grid] and the (B, n*k, D) embeddings.
    """
    batch, views = pixel_values.shape[:2]
    flat = pixel_values.reshape(batch * views, *pixel_values.shape[2:])
    s_obj, s_deep, hidden = reference_scores(model, flat, object_layer, deep_layer)
    features = reference_features(model, model.config.vision_feature_layer, hidden)
    vision = model.config.vision_config
    side = vision.image_size // vision.patch_size
    n = side * side
    k = int(keep / views) if prune else n
    rows, cols = tiles
    all_indices, all_embeds = [], []
    for b in range(batch):
        kept = [
            set(paper_select_one(s_obj[b * views + v].tolist(), s_deep[b * views + v].tolist(), k, alpha, side))
            for v in range(views)
        ]
        indices = sorted(kept[0])
        embeds = [features[b * views][i] for i in indices]
        for y in range(rows * side):
            ti, r = divmod(y, side)
            for x in range(cols * side):
                tj, c = divmod(x, side)
                view = 1 + ti * cols + tj
                if r * side + c in kept[view]:
                    indices.append(n + y * cols * side + x)
                    embeds.append(features[b * views + view][r * side + c])
        all_indices.append(indices)
        all_embeds.append(torch.stack(embeds))
    return torch.tensor(all_indices, dtype=torch.int64), torch.stack(all_embeds)
