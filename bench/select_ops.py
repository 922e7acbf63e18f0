"""What the selection op costs in kernels, counted on CPU: every aten op it dispatches, and the sorts among them.

    python bench/select_ops.py [--batch 1] [--keep 64] [--alpha 0.1] [--grid 24]

Each aten op the eager kernel dispatches is (at least) one GPU kernel launch; `sort` is a full radix sort on
CUDA, `topk` a radix *select*. The previous sort-based form (three stable sorts) is kept here, verbatim, as the
baseline, and both are checked to give identical indices on the same scores before counting. Prints JSON; the
ratios come from one run. GPU time is measured by bench/gpu_overhead.py.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hiprune.config import anchor_count
from hiprune.selection import buffer_candidates, select_static

SORTS = ("sort", "argsort")


def sort_based_select(s_obj, s_deep, keep, anchors, grid_width, grid_neighbors):
    """The selection as it was: stable full sorts for both top-ks, then a sort of the K kept indices."""

    def stable_topk_indices(scores, k):
        return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]

    num_tokens = s_deep.shape[-1]
    prio = s_deep
    if anchors > 0:
        cand = buffer_candidates(stable_topk_indices(s_obj, anchors), num_tokens, grid_width, grid_neighbors)
        positions = torch.arange(num_tokens, device=s_deep.device)
        in_buffer = (cand.unsqueeze(-1) == positions).any(dim=1)
        prio = torch.where(in_buffer, torch.full_like(s_deep, float("inf")), s_deep)
    return stable_topk_indices(prio, keep).sort(dim=-1).values


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the ``with`` block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(fn, *args) -> dict:
    with OpCounter() as counter:
        fn(*args)
    ops = dict(sorted(counter.counts.items()))
    return {
        "aten_ops": sum(ops.values()),
        "sorts": sum(v for k, v in ops.items() if k in SORTS),
        "topks": ops.get("topk", 0),
        "by_op": ops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--keep", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--grid", type=int, default=24, help="grid width W; N = W * W")
    args = parser.parse_args()
    n = args.grid * args.grid
    gen = torch.Generator().manual_seed(0)
    s_obj, s_deep = (torch.softmax(torch.randn(args.batch, n, generator=gen) * 3, -1) for _ in range(2))
    anchors = anchor_count(args.keep, args.alpha)
    result: dict = {"batch": args.batch, "keep": args.keep, "anchors": anchors, "tokens": n}
    for mode, grid in (("paper", False), ("grid", True)):
        call = (s_obj, s_deep, args.keep, anchors, args.grid, grid)
        assert torch.equal(select_static(*call), sort_based_select(*call)), "the two forms disagree"
        before, after = count(sort_based_select, *call), count(select_static, *call)
        result[mode] = {
            "before": before,
            "after": after,
            "aten_ops_ratio": round(after["aten_ops"] / before["aten_ops"], 3),
            "sorts_before_after": [before["sorts"], after["sorts"]],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
