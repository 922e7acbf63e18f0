"""The custom op's eager kernel against the paper-loop oracle, exact indices, on thousands of random cases."""

from __future__ import annotations

import random

import pytest
import torch
from oracle import paper_select

import hiprune.selection  # noqa: F401
from hiprune.config import anchor_count


def _random_case(rng: random.Random):
    width = rng.choice([2, 3, 4, 5, 7, 12, 24])
    height = rng.choice([1, 2, 3, 5, 24]) if width != 24 else 24
    n = width * height
    keep = rng.randint(1, n)
    alpha = rng.choice([0.0, 0.1, 0.2, 0.5, 1.0, rng.random()])
    while 5 * anchor_count(keep, alpha) > keep:
        alpha = alpha / 2
    return n, width, keep, alpha


def _scores(gen: torch.Generator, batch: int, n: int, style: str) -> torch.Tensor:
    if style == "ties":  # few distinct values: tie-breaking decides
        return torch.randint(0, 4, (batch, n), generator=gen).float() / 4
    if style == "sums":  # Qwen-like column sums with sinks far above 1: the reference's `-= 1` would under-fill
        return torch.rand(batch, n, generator=gen) * 50 + (torch.rand(batch, n, generator=gen) > 0.97) * 1e4
    return torch.softmax(torch.randn(batch, n, generator=gen) * 3, dim=-1)


@pytest.mark.parametrize("neighbors", ["paper", "grid"])
@pytest.mark.parametrize("style", ["softmax", "ties", "sums"])
def test_op_matches_paper_loop(neighbors, style):
    rng, gen = random.Random(f"{neighbors}{style}"), torch.Generator().manual_seed(7)
    cases = 0
    for _ in range(400):
        n, width, keep, alpha = _random_case(rng)
        batch = rng.randint(1, 3)
        s_obj, s_deep = _scores(gen, batch, n, style), _scores(gen, batch, n, style)
        got = torch.ops.hiprune.select(s_obj, s_deep, keep, anchor_count(keep, alpha), width, neighbors == "grid")
        want = paper_select(s_obj, s_deep, keep, alpha, width, neighbors)
        assert torch.equal(got, want), (n, width, keep, alpha, batch)
        cases += batch
    assert cases > 700


def test_paper_quirks_wrap_and_clamp():
    """Anchor 23 on a 24-wide grid pulls in token 24 (wrap); an anchor on the top row pulls in token 0 (clamp)."""
    n, w = 576, 24
    s_obj = torch.zeros(1, n)
    s_obj[0, 23] = 1.0
    s_deep = -torch.arange(n, dtype=torch.float32).unsqueeze(0)  # registers: lowest indices first
    paper = torch.ops.hiprune.select(s_obj, s_deep, 10, 1, w, False)[0].tolist()
    grid = torch.ops.hiprune.select(s_obj, s_deep, 10, 1, w, True)[0].tolist()
    # paper: anchor 23, 22, 24 (wraps to row 1), -1 clamped to 0, 47; then registers 1..5 by s_deep
    assert paper == [0, 1, 2, 3, 4, 5, 22, 23, 24, 47]
    # grid: 23 is the row's last token, so no right neighbour and no up neighbour; registers 0..6
    assert grid == [0, 1, 2, 3, 4, 5, 6, 22, 23, 47]


def test_budget_is_per_image_and_always_exact():
    gen = torch.Generator().manual_seed(0)
    s = torch.rand(4, 576, generator=gen)
    out = torch.ops.hiprune.select(s, s.flip(-1), 64, 1, 24, False)
    assert out.shape == (4, 64)
    assert all(len(set(row.tolist())) == 64 for row in out)
    assert torch.all(out[:, 1:] > out[:, :-1])


def test_anchors_zero_is_plain_topk_of_deep_scores():
    gen = torch.Generator().manual_seed(1)
    s_obj, s_deep = torch.rand(2, 100, generator=gen), torch.rand(2, 100, generator=gen)
    got = torch.ops.hiprune.select(s_obj, s_deep, 7, 0, 10, False)
    want = torch.topk(s_deep, 7).indices.sort(-1).values
    assert torch.equal(got, want)


def test_fake_kernel_gives_static_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        s = torch.empty(3, 576)
        out = torch.ops.hiprune.select(s, s, 64, 1, 24, False)
    assert tuple(out.shape) == (3, 64) and out.dtype == torch.int64


@pytest.mark.parametrize("neighbors", ["paper", "grid"])
def test_topk_form_matches_paper_loop(neighbors):
    """The Core ML decomposition: same kept set as the oracle for scores without exact ties."""
    from hiprune.selection import select_topk_form

    rng, gen = random.Random(f"topk{neighbors}"), torch.Generator().manual_seed(5)
    for _ in range(300):
        n, width, keep, alpha = _random_case(rng)
        s_obj, s_deep = _scores(gen, 2, n, "softmax"), _scores(gen, 2, n, "sums")
        got = select_topk_form(s_obj, s_deep, keep, anchor_count(keep, alpha), width, neighbors == "grid")
        assert torch.equal(got, paper_select(s_obj, s_deep, keep, alpha, width, neighbors)), (n, width, keep, alpha)


def test_order_keys_rank_like_a_stable_sort_on_awkward_floats():
    """Signed zeros (equal), negatives, infinities and subnormals: the keys' top-k is torch's stable sort."""
    from hiprune.selection import stable_order_keys

    values = torch.tensor([-0.0, 0.0, -1.5, 3.0, float("inf"), -float("inf"), 1e-40, -1e-40, 7e30, -7e30])
    gen = torch.Generator().manual_seed(5)
    scores = values[torch.randint(0, len(values), (3, 40), generator=gen)]
    want = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    keys = stable_order_keys(scores)
    for k in (1, 7, 23, 40):
        assert torch.equal(keys.topk(k, dim=-1).indices, want[:, :k]), k
