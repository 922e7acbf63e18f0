"""The comparison's gates: kept sets by index value, embeddings on atol, rtol and cosine, every failure named."""

from __future__ import annotations

import numpy as np

from hiprune.runtime.compare import TOLERANCES, compare_outputs

FP32, FP16 = TOLERANCES[("onnx", "fp32")], TOLERANCES[("tensorrt", "fp16")]


def _reference(batch=1, tokens=576, keep=64, dim=32, scale=0.033, seed=0):
    """Projected features of every token and a kept set per image, like the default model's fp16 check."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(-scale, scale, (batch, tokens, dim))
    indices = np.sort(np.stack([rng.choice(tokens, keep, replace=False) for _ in range(batch)]), axis=-1)
    return features, indices


def _outputs(features, indices):
    return {"image_embeds": np.take_along_axis(features, indices[..., None], 1), "indices": indices}


def test_zero_embeddings_fail_even_inside_atol():
    features, indices = _reference()
    reference = _outputs(features, indices)
    zeros = {"image_embeds": np.zeros_like(reference["image_embeds"]), "indices": indices}
    check = compare_outputs(reference, zeros, FP16)
    assert check.max_abs <= FP16.atol  # the old single gate passed this
    assert not check.ok
    (failure,) = check.failures()
    assert failure.startswith("image_embeds:") and "rtol" in failure and "cosine" in failure


def test_kept_sets_compared_by_value_not_position():
    """One near-tie swap early in raster order shifts every later position, but the sets share K-1 tokens."""
    features, indices = _reference()
    reference = _outputs(features, indices)
    swapped = indices.copy()
    outside = np.setdiff1d(np.arange(576), indices[0])
    swapped[0, 1] = outside[outside > indices[0, -1]][0] if (outside > indices[0, -1]).any() else outside[0]
    swapped.sort(axis=-1)
    actual = _outputs(features, swapped)
    assert (swapped != indices).sum() > 1  # positional agreement would see many mismatches
    loose, strict = compare_outputs(reference, actual, FP16), compare_outputs(reference, actual, FP32)
    assert (loose.kept_overlap, loose.compared_tokens) == (63, 63)
    assert abs(loose.min_jaccard - 63 / 65) < 1e-12
    assert loose.ok and loose.max_abs == 0.0  # embeddings matched by index value: identical rows
    assert not strict.ok and strict.failures() == [
        "indices: an image shares only 63 of 64 kept tokens (Jaccard 0.969); at least 64 required"
    ]


def test_every_failing_output_is_named_and_nan_fails():
    features, indices = _reference(batch=2)
    reference = _outputs(features, indices)
    noisy = _outputs(features + np.random.default_rng(1).normal(0, 0.05, features.shape), indices[::-1].copy())
    failures = compare_outputs(reference, noisy, FP16).failures()
    assert {f.split(":")[0] for f in failures} == {"indices", "image_embeds"}
    nan = _outputs(features, indices)
    nan["image_embeds"][0, 3, 0] = np.nan
    assert not compare_outputs(reference, nan, FP16).ok


def test_shape_mismatch_is_a_failure_not_a_crash():
    features, indices = _reference()
    reference = _outputs(features, indices)
    short = _outputs(features, indices[:, :32])
    check = compare_outputs(reference, short, FP16)
    assert not check.ok and check.failures()[0].startswith("indices: shape (1, 32)")


def test_fp32_row_passes_its_own_gates():
    features, indices = _reference(scale=8.0)
    reference = _outputs(features, indices)
    close = _outputs(features + 1e-6, indices)
    check = compare_outputs(reference, close, FP32, what="model.onnx vs PyTorch")
    assert check.ok and check.indices_equal
    assert check.describe().startswith("model.onnx vs PyTorch: indices equal, embeds max|Δ| 1.00e-06")


def test_every_image_must_meet_the_overlap():
    """Image 0 exact, image 1 keeps a disjoint set: the batch fails on image 1 whatever image 0 does."""
    features, indices = _reference(batch=2, tokens=200, keep=16)
    reference = _outputs(features, indices)
    disjoint = indices.copy()
    disjoint[1] = np.setdiff1d(np.arange(200), indices[1])[:16]
    check = compare_outputs(reference, _outputs(features, disjoint), FP16)
    assert check.kept_overlap == 0 and not check.ok
    assert check.failures()[0].startswith("indices: an image shares only 0 of 16")


def test_indices_must_be_ascending_and_non_negative():
    features, indices = _reference()
    reference = _outputs(features, indices)
    reversed_ = _outputs(features, indices[:, ::-1].copy())
    negative = {"image_embeds": reference["image_embeds"], "indices": np.where(indices == indices[0, 0], -1, indices)}
    assert "not strictly ascending" in " ".join(compare_outputs(reference, reversed_, FP32).failures())
    assert "negative index -1" in " ".join(compare_outputs(reference, negative, FP16).failures())


def test_tokens_kept_only_by_one_side_stay_at_the_reference_scale():
    """Near-tie swaps are allowed at fp16, but a swapped-in token's embedding cannot be garbage."""
    features, indices = _reference()
    reference = _outputs(features, indices)
    swapped = indices.copy()
    swapped[0, -1] = 575 if indices[0, -1] != 575 else 574
    swapped.sort(axis=-1)
    actual = _outputs(features, swapped)
    assert compare_outputs(reference, actual, FP16).ok
    position = int(np.flatnonzero(~np.isin(swapped[0], indices[0]))[0])
    actual["image_embeds"][0, position] = 1e4
    failures = compare_outputs(reference, actual, FP16).failures()
    assert any("only this side kept" in f for f in failures)
