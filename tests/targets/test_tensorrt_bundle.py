"""TensorRT bundles on the way to an engine: `build-engine` never blesses a corrupted bundle, bf16 bundles carry
the fp32 reference their engine is checked against, and compare.sh judges with the project's own comparison."""

from __future__ import annotations

import collections
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from oracle import paper_select, reference_scores

import hiprune
from hiprune.api import ExportRequest, export
from hiprune.backends import tensorrt_rtx_missing
from hiprune.cli import main
from hiprune.config import HiPruneConfig
from hiprune.errors import ArtifactError
from hiprune.runtime.compare import TOLERANCES

needs_rtx = pytest.mark.skipif(tensorrt_rtx_missing() is not None, reason=f"{tensorrt_rtx_missing()}")


def _export(path, out, precision, device, keep=6):
    options = {"precision": precision, "device": device, "build": "defer"}
    request = ExportRequest(
        hiprune=HiPruneConfig(keep=keep), target="tensorrt", model=str(path), output=out, options=options
    )
    return export(request)


@pytest.fixture(scope="module")
def gpu_bundle(tiny_checkpoint, tmp_path_factory):
    """A tiny fp16 bundle with scripts (gpu profile) whose manifest asks for a TensorRT-RTX build."""
    bundle = _export(tiny_checkpoint(), tmp_path_factory.mktemp("b") / "fp16", "fp16", "gpu").output
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["target_options"]["device"] = manifest["target_details"]["engine_settings"]["device"] = "rtx"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _flip_byte(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _count_hashes(monkeypatch):
    """Counts sha256 computations per file name over the build-engine path."""
    import hiprune.artifacts
    import hiprune.runtime.tensorrt_build

    hashed, real = collections.Counter(), hiprune.artifacts.sha256_file

    def counting(path, *args):
        hashed[path.name] += 1
        return real(path, *args)

    for module in (hiprune.artifacts, hiprune.runtime.tensorrt_build):
        monkeypatch.setattr(module, "sha256_file", counting)
    return hashed


def _listing(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@needs_rtx
def test_build_engine_never_blesses_a_corrupted_bundle(gpu_bundle, tmp_path, monkeypatch):
    graph = shutil.copytree(gpu_bundle, tmp_path / "graph")
    _flip_byte(graph / "model.onnx.data")
    before = _listing(graph)
    refused = CliRunner().invoke(main, ["build-engine", str(graph)])
    assert refused.exit_code == ArtifactError.exit_code, refused.output
    assert "model.onnx.data is corrupt" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert _listing(graph) == before
    assert CliRunner().invoke(main, ["verify", str(graph)]).exit_code == ArtifactError.exit_code

    script = shutil.copytree(gpu_bundle, tmp_path / "script")
    _flip_byte(script / "compare.sh")  # not read by the build: the sizes check passes, the build goes ahead
    built = CliRunner().invoke(main, ["build-engine", str(script)])
    assert built.exit_code == 0, built.output
    verified = CliRunner().invoke(main, ["verify", str(script)])
    assert verified.exit_code == ArtifactError.exit_code and "compare.sh is corrupt" in verified.stderr
    files = json.loads((script / "manifest.json").read_text())["files"]
    assert files["model.engine"]["bytes"] == (script / "model.engine").stat().st_size > 0
    recorded = json.loads((gpu_bundle / "manifest.json").read_text())["files"]
    assert {k: v for k, v in files.items() if k != "model.engine"} == recorded

    full = shutil.copytree(gpu_bundle, tmp_path / "full")
    hashed = _count_hashes(monkeypatch)
    assert CliRunner().invoke(main, ["build-engine", str(full), "--verify", "full"]).exit_code == 0
    assert hashed == dict.fromkeys([*recorded, "model.engine"], 1)  # the build's inputs too: once each


@needs_rtx
def test_bf16_bundle_carries_the_fp32_reference(tiny_checkpoint, reference_model, tmp_path):
    """The engine check's reference for bf16 (ORT CPU has no bf16 kernels): the fp32 module's outputs on the
    check input, recorded in the bundle; a runner is judged against it with the bf16 tolerance, ORT never asked."""
    from hiprune.runtime.compare import check_input
    from hiprune.runtime.runners import OrtRunner
    from hiprune.runtime.tensorrt_build import CHECK_REFERENCE, check_engine

    path = tiny_checkpoint()
    bf16 = _export(path, tmp_path / "bf16", "bf16", "rtx")
    assert bf16.manifest["files"][CHECK_REFERENCE]["bytes"] > 0
    saved = np.load(bf16.output / CHECK_REFERENCE)
    pixel_values = saved["pixel_values"]
    np.testing.assert_array_equal(pixel_values, check_input(tuple(bf16.manifest["inputs"]["pixel_values"]["shape"])))
    h = bf16.manifest["hiprune"]
    with torch.no_grad():
        s_obj, s_deep, _ = reference_scores(
            reference_model(path), torch.from_numpy(pixel_values), h["object_layer"], h["deep_layer"]
        )
    want = paper_select(s_obj, s_deep, h["keep"], h["alpha"], bf16.manifest["encoder"]["grid"][1], h["neighbors"])
    np.testing.assert_array_equal(saved["indices"], want.numpy())

    fp32 = _export(path, tmp_path / "fp32", "fp32", "rtx").output  # stands in for the engine: runs on ORT CPU
    import hiprune.runtime.tensorrt_build as build

    original = build.engine_runner
    build.engine_runner = lambda engine, backend, io=None: OrtRunner(fp32 / "model.onnx")
    try:
        check = check_engine(bf16.output / "model.onnx", bf16.output / "model.engine", "tensorrt_rtx", "bf16")
    finally:
        build.engine_runner = original
    assert check.ok and check.indices_equal and check.tolerance == TOLERANCES[("tensorrt", "bf16")]
    assert CHECK_REFERENCE in check.what


def test_compare_script_judges_with_the_project_comparison(tmp_path):
    """compare.sh saves each runner's outputs and judges them with hiprune.runtime.compare (all three gates);
    Polygraphy's elementwise check would pass an all-zero output here (every |Δ| ≤ atol)."""
    from hiprune.runtime.tensorrt_build import save_check_reference
    from hiprune.targets.tensorrt import profile_settings, write_scripts

    write_scripts(tmp_path, profile_settings("gpu", "fp16"))
    compare = (tmp_path / "compare.sh").read_text()
    assert "--atol" not in compare and compare.count("--save-outputs") == 2 and "hiprune.runtime" in compare
    judge = next(line for line in compare.splitlines() if "hiprune.runtime" in line)
    rng = np.random.default_rng(3)
    feed = {"pixel_values": np.zeros((1, 3, 8, 8), np.float32)}
    embeds = (rng.standard_normal((1, 4, 8)) * 0.01).astype(np.float32)
    indices = np.array([[1, 5, 7, 9]])
    save_check_reference(tmp_path / "ref.npz", feed, {"image_embeds": embeds, "indices": indices})
    save_check_reference(tmp_path / "same.npz", feed, {"image_embeds": embeds + 1e-4, "indices": indices})
    save_check_reference(tmp_path / "zeros.npz", feed, {"image_embeds": 0 * embeds, "indices": indices})
    args = shlex.split(judge)
    assert args[1:5] == ["-m", "hiprune.runtime.tensorrt_build", "engine_outputs.json", "ort_outputs.json"]
    env = {**os.environ, "PYTHONPATH": str(Path(hiprune.__file__).parents[1])}
    results = {}
    for name in ("same", "zeros"):
        command = [sys.executable, *args[1:3], f"{name}.npz", "ref.npz", *args[5:]]
        results[name] = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert results["same"].returncode == 0 and "indices equal" in results["same"].stdout
    assert results["zeros"].returncode == 1 and "FAILED" in results["zeros"].stdout
    assert "max|Δ|/max|ref|" in results["zeros"].stdout
