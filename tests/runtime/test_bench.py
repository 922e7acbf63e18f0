"""``hiprune-bench`` on a tiny checkpoint: the three files with their documented keys, the cache, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hiprune.bench_cli import TARGETS, main
from hiprune.bench_report import CHAIN_STAGES, bootstrap_interval, speedups

STATS = {"median", "p90", "n"}


@pytest.fixture(scope="module")
def bench_run(tiny_vlm, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = [
        "--model",
        str(tiny_vlm()),
        "--keep",
        "full,8",
        "--repeats",
        "2",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    first = CliRunner().invoke(main, args)
    again = ["--repeats", "1", "--warmup", "0", "--out", str(out / "again"), "--cache", str(out / "artifacts")]
    second = CliRunner().invoke(main, [*args, *again])
    return out, first, second


def test_bench_writes_json_md_png_with_documented_keys(bench_run):
    out, first, _ = bench_run
    assert first.exit_code == 0, first.output
    report = json.loads((out / "bench.json").read_text())
    assert {"format", "model", "target", "device", "versions", "precision", "runtimes", "settings", "budgets",
            "speedups"} <= report.keys()  # fmt: skip
    assert {"torch", "onnxruntime", "matplotlib"} <= report["versions"].keys()
    assert report["runtimes"]["llm"] == "transformers" and report["runtimes"]["encoder"] == "onnxruntime"
    assert [(b["budget"], b["kept_tokens"]) for b in report["budgets"]] == [("full", 16), ("8", 8)]
    for entry in report["budgets"]:
        assert entry["chain_ms"].keys() == set(CHAIN_STAGES)
        assert all(entry["chain_ms"][stage].keys() == STATS for stage in CHAIN_STAGES)
        assert entry["chain_ms"]["ttft"]["n"] == 2
        assert entry["ideal_ms"]["encoder"]["n"] == 2 and entry["ideal_ms"]["prefill"]["n"] == 2
        assert entry["prompt_tokens"] == report["budgets"][0]["prompt_tokens"] - 16 + entry["kept_tokens"]
        assert 1 <= len(entry["generated_ids"]) <= 3
    assert report["speedups"]["8"].keys() == {
        "chain_ttft_full_over_pruned", "ideal_ttft_full_over_pruned", "chain_over_ideal", "chain_over_ideal_90ci",
    }  # fmt: skip
    table = (out / "bench.md").read_text()
    assert "| full | 16 |" in table and "| 8 | 8 |" in table and "TTFT full / 8" in table
    with Image.open(out / "bench.png") as png:
        assert png.format == "PNG" and png.width > 300


def test_second_run_reuses_the_cached_artifacts(bench_run):
    out, _, second = bench_run
    assert second.exit_code == 0, second.output
    report = json.loads((out / "again" / "bench.json").read_text())
    assert [b["reused"] for b in report["budgets"]] == [True, True]
    assert report["budgets"][0]["chain_ms"]["ttft"]["n"] == 1


def test_cache_reads_each_manifest_once_and_re_exports_an_artifact_whose_files_changed(
    bench_run, tiny_vlm, tmp_path, monkeypatch
):
    import dataclasses
    import shutil

    import hiprune.artifacts
    from hiprune.bench import BenchRequest, artifact_for, run_bench

    out, _, _ = bench_run
    cache = tmp_path / "artifacts"
    shutil.copytree(out / "artifacts", cache)
    with (cache / "onnx-8" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")  # the listed size no longer matches
    reads = []
    original = hiprune.artifacts.load_manifest
    monkeypatch.setattr(hiprune.artifacts, "load_manifest", lambda d: reads.append(d) or original(d))
    request = BenchRequest(model=str(tiny_vlm()), keep=(None, 8), cache=cache, out=tmp_path / "out")
    full, reused_full = artifact_for(request, None)
    assert reused_full and len(reads) == 1 and full.manifest["hiprune"]["prune"] is False
    pruned, reused_pruned = artifact_for(request, 8)
    assert not reused_pruned and pruned.manifest["hiprune"]["keep"] == 8
    hiprune.artifacts.verify_artifact(pruned.directory, full=True)  # rewritten whole
    reads.clear()
    run_bench(dataclasses.replace(request, repeats=1, warmup=0, max_new_tokens=1), quiet=True)
    assert len(reads) == 2  # one per budget: the chains take the checked manifests, they do not read them again


def test_onnxruntime_llm_generates_the_same_ids(bench_run, tiny_vlm):
    """Encoder and ONNX decoder sessions in one process (the cached artifacts reused): the transformers ids."""
    out, first, _ = bench_run
    assert first.exit_code == 0, first.output
    args = ["--model", str(tiny_vlm()), "--keep", "full,8", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "3",
            "--llm-runtime", "onnxruntime", "--cache", str(out / "artifacts"), "--out", str(out / "ort")]  # fmt: skip
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    ours = json.loads((out / "ort" / "bench.json").read_text())
    reference = json.loads((out / "bench.json").read_text())
    assert ours["runtimes"]["llm"] == "onnxruntime" and ours["runtimes"]["encoder"] == "onnxruntime"
    assert all(b["reused"] for b in ours["budgets"])
    assert [b["generated_ids"] for b in ours["budgets"]] == [b["generated_ids"] for b in reference["budgets"]]


def test_speedups_are_full_over_pruned():
    def entry(budget, chain, ideal):
        return {"budget": budget, "chain_ms": {"ttft": {"median": chain}}, "ideal_ms": {"ttft": ideal}}

    ratios = speedups([entry("full", 30.0, 24.0), entry("64", 12.0, 8.0)])
    assert ratios == {
        "64": {
            "chain_ttft_full_over_pruned": 2.5,
            "ideal_ttft_full_over_pruned": 3.0,
            "chain_over_ideal": 0.833,
            "chain_over_ideal_90ci": None,
        }  # fmt: skip
    }


def _rounds(chain, encoder, prefill):
    return {"chain": {"ttft": chain}, "ideal": {"encoder": encoder, "prefill": prefill}}


def test_bootstrap_interval_is_exact_without_noise_and_brackets_noisy_rounds():
    steady_full = {"samples_ms": _rounds([30.0] * 5, [14.0] * 5, [10.0] * 5)}
    steady = {"samples_ms": _rounds([12.0] * 5, [5.0] * 5, [3.0] * 5)}
    assert bootstrap_interval(steady_full, steady) == [0.833, 0.833]  # (30/12) / (24/8) in every draw
    rng = np.random.default_rng(1)
    noisy = [[v * f for v, f in zip(rounds, rng.uniform(0.8, 1.25, 7), strict=True)]
             for rounds in ([30.0] * 7, [14.0] * 7, [10.0] * 7, [12.0] * 7, [5.0] * 7, [3.0] * 7)]  # fmt: skip
    low, high = bootstrap_interval({"samples_ms": _rounds(*noisy[:3])}, {"samples_ms": _rounds(*noisy[3:])})
    point = (np.median(noisy[0]) / np.median(noisy[3])) / (
        (np.median(noisy[1]) + np.median(noisy[2])) / (np.median(noisy[4]) + np.median(noisy[5]))
    )
    assert low < point < high and high - low > 0.05
    two_rounds = {"samples_ms": _rounds([12.0] * 2, [5.0] * 2, [3.0] * 2)}
    assert bootstrap_interval(steady_full, two_rounds) is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--keep", "full,abc"], "'abc' is not 'full' or a positive integer"),
        (["--keep", "64,64"], "names '64' twice"),
        (["--repeats", "0"], "--repeats 0 must be at least 1"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1"),
        (["--llm-runtime", "vllm"], "--llm-runtime 'vllm' is unknown"),
        (["--llm-runtime", "onnxruntime", "--llm-precision", "bfloat16"], "choose one of float32, float16"),
        (["--model", "/nonexistent/ckpt"], "no such directory"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.output
    assert not out.exists()


def test_cli_targets_are_the_registry():
    from hiprune.targets import TARGETS as REGISTRY

    assert sorted(TARGETS) == sorted(REGISTRY)
