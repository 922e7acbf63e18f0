"""--target tensorrt on CPU: the parser-ready graph (ORT parity vs the oracle), precision typing, the op-table
check, the bundle's scripts, and clean refusals. Every exported graph is also parsed and built by TensorRT-RTX's
real parser and builder (no GPU needed); running engines needs a GPU and skips here."""

from __future__ import annotations

import json
import platform
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from click.testing import CliRunner
from oracle import paper_select, reference_scores

from hiprune.api import ExportRequest, export
from hiprune.artifacts import load_manifest, write_manifest
from hiprune.backends import tensorrt_missing, tensorrt_rtx_missing, tensorrt_rtx_runtime_missing
from hiprune.cli import main
from hiprune.config import HiPruneConfig
from hiprune.errors import ArtifactError, BackendUnavailableError, ConfigError, ExportError
from hiprune.graphs.tensorrt_compat import MAX_TOPK_K, TensorRTCompatibilityPass
from hiprune.runtime import OrtRunner
from hiprune.targets.tensorrt import PROFILES, TensorRTTarget, profile_settings, write_scripts

needs_tensorrt = pytest.mark.skipif(tensorrt_missing() is not None, reason=f"{tensorrt_missing()}")
# tensorrt-rtx is in the test extra wherever it has wheels: there a missing parser fails instead of skipping
RTX_WHEELS = sys.platform in ("linux", "win32") and platform.machine() in ("x86_64", "AMD64")
needs_rtx = pytest.mark.skipif(
    tensorrt_rtx_missing() is not None and not RTX_WHEELS, reason=f"{tensorrt_rtx_missing()}"
)


def assert_real_parser_built(manifest):
    """The export's verdict came from TensorRT-RTX's parser and a strongly typed build (where it has wheels)."""
    verdict = manifest["target_details"]["parser"]
    if not RTX_WHEELS and isinstance(verdict, str):
        return
    assert verdict["backend"].startswith("tensorrt_rtx") and verdict["layers"] > 50 and verdict["engine_bytes"] > 0


def _export(path, tmp_path, precision="fp32", device="gpu", batch=1, build="defer", **hiprune):
    config = HiPruneConfig(**hiprune)
    options = {"precision": precision, "device": device, "build": build}
    return export(
        ExportRequest(
            hiprune=config,
            target="tensorrt",
            model=str(path),
            batch=batch,
            output=tmp_path / f"trt-{precision}",
            options=options,
        )
    )


def _oracle_indices(reference_model, path, manifest, pixel_values):
    model = reference_model(path)
    h = manifest["hiprune"]
    s_obj, s_deep, _ = reference_scores(model, pixel_values, h["object_layer"], h["deep_layer"])
    return paper_select(s_obj, s_deep, h["keep"], h["alpha"], manifest["encoder"]["grid"][1], h["neighbors"])


def _pixels(batch, size, seed=21):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize(
    ("geometry", "hiprune", "batch"),
    [
        (dict(), dict(keep=10, alpha=1.0), 1),
        (dict(image_size=40), dict(keep=12, alpha=0.5, neighbors="grid"), 3),
        (dict(image_size=56, layers=6), dict(keep=20, alpha=0.3, object_layer=2), 1),
        (dict(image_size=56, layers=6), dict(keep=5, alpha=0.0), 1),  # anchors = 0
    ],
)
def test_parser_ready_graph_matches_oracle(tiny_checkpoint, reference_model, tmp_path, geometry, hiprune, batch):
    path = tiny_checkpoint(**geometry)
    result = _export(path, tmp_path, batch=batch, **hiprune)
    model = onnx.load(result.output / "model.onnx")
    assert not model.functions
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    for value in (*model.graph.input, *model.graph.output):
        assert all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim), value.name
    TensorRTCompatibilityPass()(ir.load(result.output / "model.onnx"))
    assert_real_parser_built(result.manifest)
    size = result.manifest["inputs"]["pixel_values"]["shape"][-1]
    pixel_values = _pixels(batch, size)
    with torch.no_grad():
        want = _oracle_indices(reference_model, path, result.manifest, pixel_values)
    with OrtRunner(result.output / "model.onnx") as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
    np.testing.assert_array_equal(got["indices"], want.numpy())


def _dtypes(path):
    model = ir.load(path)
    return model, {(node.op_type, node.outputs[0].dtype) for node in model.graph}


def test_fp16_strongly_typed_graph_keeps_selection_fp32(tiny_checkpoint, reference_model, tmp_path):
    path = tiny_checkpoint(image_size=40)
    result = _export(path, tmp_path, precision="fp16", keep=10, alpha=0.5)
    model, kinds = _dtypes(result.output / "model.onnx")
    assert ("MatMul", ir.DataType.FLOAT16) in kinds and ("Conv", ir.DataType.FLOAT16) in kinds
    assert ("LayerNormalization", ir.DataType.FLOAT16) not in kinds
    for node in model.graph:
        if node.op_type in ("TopK", "ReduceMean", "LayerNormalization"):
            assert node.inputs[0].dtype == ir.DataType.FLOAT, node.name
    score_softmax = [n for n in model.graph if n.op_type == "Softmax" and n.outputs[0].dtype == ir.DataType.FLOAT]
    assert len(score_softmax) == 2  # the object and deep layers'; every other attention stays fp16
    for softmax in score_softmax:  # their scaling and QKᵀ join the island (fp16 logits overflow first)
        scale = softmax.inputs[0].producer()
        qk = scale.inputs[0].producer()
        assert (scale.op_type, qk.op_type) == ("Mul", "MatMul")
        assert scale.outputs[0].dtype == qk.outputs[0].dtype == qk.inputs[0].dtype == ir.DataType.FLOAT
    assert model.graph.inputs[0].dtype == ir.DataType.FLOAT and model.graph.outputs[0].dtype == ir.DataType.FLOAT
    checks = result.manifest["target_details"]["checks"]
    assert checks["fp32_tensorrt_ready_on_ort"]["indices_equal"] is True
    # the summary and manifest report the graph that is written (fp16), not its fp32 twin
    assert checks["written_graph_on_ort"] == result.comparison_label == "check vs PyTorch (fp16 graph, ORT CPU)"
    assert result.summary()[result.comparison_label] == result.comparison.describe()
    verification = result.manifest["verification"]
    assert verification["tolerance"]["atol"] == 5e-2 and verification["kept_overlap"] >= 0.9 * verification["kept"]
    assert_real_parser_built(result.manifest)
    pixel_values = _pixels(1, 40)
    with torch.no_grad():
        want = _oracle_indices(reference_model, path, result.manifest, pixel_values).numpy()
    with OrtRunner(result.output / "model.onnx") as runner:
        got = runner.infer({"pixel_values": pixel_values.numpy()})
    assert (got["indices"] == want).mean() >= 0.9


def test_bf16_graph_types(tiny_checkpoint, tmp_path):
    result = _export(tiny_checkpoint(), tmp_path, precision="bf16", keep=6)
    model, kinds = _dtypes(result.output / "model.onnx")
    assert ("MatMul", ir.DataType.BFLOAT16) in kinds and ir.DataType.FLOAT16 not in {k[1] for k in kinds}
    assert ("Conv", ir.DataType.FLOAT) in kinds  # opset 18 Conv has no bf16
    TensorRTCompatibilityPass()(model)
    assert "fp32 twin" in result.manifest["target_details"]["checks"]["written_graph_on_ort"]
    assert_real_parser_built(result.manifest)


def _one_node_model(op, inputs, outputs, initializers=()):
    """A graph of one ``op`` node named ``planted_<op>``; inputs named by an initializer are not graph inputs."""
    constant_names = {t.name for t in initializers}
    node = onnx.helper.make_node(op, [i.name for i in inputs], [o.name for o in outputs], name=f"planted_{op}")
    graph = onnx.helper.make_graph(
        [node], "g", [i for i in inputs if i.name not in constant_names], outputs, initializer=list(initializers)
    )
    return ir.serde.deserialize_model(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]))


def _vi(name, dtype, shape):
    return onnx.helper.make_tensor_value_info(name, dtype, shape)


F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: _one_node_model("NonZero", [_vi("x", F, [4])], [_vi("y", I64, [1, 4])]),
            r"node 'planted_NonZero' \(NonZero\): output shape depends on the data",
        ),
        (
            lambda: _one_node_model("Relu", [_vi("x", F, ["batch", 4])], [_vi("y", F, ["batch", 4])]),
            r"graph value 'x' has shape .*batch.*static shapes",
        ),
        (
            lambda: _one_node_model(
                "TopK", [_vi("x", F, [1, 8]), _vi("k", I64, [1])], [_vi("v", F, [1, 2]), _vi("i", I64, [1, 2])]
            ),
            r"node 'planted_TopK' \(TopK\): input 1 \('k'\) must be a constant initializer",
        ),
        (
            lambda: _one_node_model(
                "TopK",
                [_vi("x", F, [1, 5000]), _vi("k", I64, [1])],
                [_vi("v", F, [1, 4000]), _vi("i", I64, [1, 4000])],
                initializers=[onnx.numpy_helper.from_array(np.array([4000]), "k")],
            ),
            rf"node 'planted_TopK' \(TopK\): K = 4000 exceeds TensorRT's TopK limit of {MAX_TOPK_K}",
        ),
        (
            lambda: _one_node_model(
                "TopK",
                [_vi("x", I64, [1, 8]), _vi("k", I64, [1])],
                [_vi("v", I64, [1, 2]), _vi("i", I64, [1, 2])],
                initializers=[onnx.numpy_helper.from_array(np.array([2]), "k")],
            ),
            r"\(TopK\): input type INT64 is not one TensorRT takes here",
        ),
    ],
)
def test_compatibility_pass_names_offenders(build, message):
    with pytest.raises(ExportError, match=message):
        TensorRTCompatibilityPass()(build())


def test_op_table_defers_to_a_real_parser():
    """With a parser at hand the table's objection is recorded for the manifest, and the parser decides."""
    findings: list[str] = []
    model = _one_node_model("NonZero", [_vi("x", F, [4])], [_vi("y", I64, [1, 4])])
    TensorRTCompatibilityPass(findings)(model)
    assert len(findings) == 1 and "'planted_NonZero' (NonZero): output shape depends on the data" in findings[0]


def test_engine_disagreement_is_an_error_with_both_numbers():
    from hiprune.runtime.compare import TOLERANCES, compare_outputs
    from hiprune.runtime.tensorrt_build import require_agreement

    reference = {"image_embeds": np.zeros((1, 4, 8), np.float32), "indices": np.arange(4)[None]}
    engine = {"image_embeds": np.full((1, 4, 8), 0.1, np.float32), "indices": np.arange(4)[None]}
    check = compare_outputs(reference, engine, TOLERANCES[("tensorrt", "fp16")])
    with pytest.raises(ExportError, match="the engine disagrees with its reference beyond the tolerance") as info:
        require_agreement(check)
    assert check.describe() in str(info.value) and "1.00e-01" in str(info.value)


@pytest.mark.parametrize("device", sorted(PROFILES))
def test_scripts_carry_the_profile_flags(tmp_path, device):
    engine = profile_settings(device, "fp16")
    write_scripts(tmp_path, engine)
    build = (tmp_path / "build_engine.sh").read_text()
    compare = (tmp_path / "compare.sh").read_text()
    profile = PROFILES[device]
    command = next(line for line in build.splitlines() if "--onnx=" in line)
    args = shlex.split(command)
    for flag in (
        "--onnx=model.onnx",
        "--saveEngine=model.engine",
        "--stronglyTyped",
        "--timingCacheFile=timing.cache",
        f"--memPoolSize=workspace:{profile.workspace_mib}M",
        f"--builderOptimizationLevel={profile.builder_optimization_level}",
    ):
        assert flag in args, flag
    assert "--fp16" not in args  # strongly typed: precision comes from the graph, not builder flags
    assert re.search(r"polygraphy run model.onnx --trt --strongly-typed", compare)
    assert f"workspace:{profile.workspace_mib}M" in compare
    assert (tmp_path / "build_engine.sh").stat().st_mode & 0o111
    assert compare.count("--data-loader-script check_input.py:load_data") == 2  # the engine's run and ORT's


def test_compare_script_feeds_the_python_checks_input(tmp_path, monkeypatch):
    """compare.sh's data loader draws exactly the input `build-engine` and the export check the engine on."""
    import runpy

    from hiprune.runtime.compare import check_input

    write_scripts(tmp_path, profile_settings("gpu", "fp16"))
    (tmp_path / "manifest.json").write_text(json.dumps({"inputs": {"pixel_values": {"shape": [3, 3, 8, 8]}}}))
    monkeypatch.chdir(tmp_path)
    (feed,) = list(runpy.run_path("check_input.py")["load_data"]())
    np.testing.assert_array_equal(feed["pixel_values"], check_input((3, 3, 8, 8)))


def test_bundle_manifest_records_profile(tiny_checkpoint, tmp_path):
    result = _export(tiny_checkpoint(), tmp_path, precision="fp16", device="jetson-orin", keep=6)
    details = json.loads((result.output / "manifest.json").read_text())["target_details"]
    assert details["engine_settings"] == {
        "device": "jetson-orin",
        "precision": "fp16",
        "workspace_mib": 2048,
        "builder_optimization_level": 3,
    }
    assert details["engine_built"] is False and "--stronglyTyped" in details["trtexec"]
    assert sorted(p.name for p in result.output.iterdir()) == [
        "build_engine.sh",
        "check_input.py",
        "compare.sh",
        "manifest.json",
        "model.onnx",
        "model.onnx.data",
    ]


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_calibrated_precisions_are_refused(precision):
    with pytest.raises(ConfigError, match=rf"--precision {precision} needs calibration data"):
        TensorRTTarget({"precision": precision})


def test_option_of_another_target_is_refused():
    from hiprune.targets.onnx import OnnxTarget

    with pytest.raises(ConfigError, match="--device does not apply to --target onnx; it applies to: tensorrt"):
        OnnxTarget({"device": "gpu"})


@pytest.mark.skipif(tensorrt_missing() is None, reason="TensorRT and a GPU are present")
def test_build_now_without_tensorrt_fails_cleanly(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "--target",
            "tensorrt",
            "--keep",
            "4",
            "--model",
            str(tiny_checkpoint()),
            "--build",
            "now",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == BackendUnavailableError.exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--build now needs TensorRT and a GPU here" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_build_engine_command_errors(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["build-engine", str(tmp_path)])
    assert result.exit_code == ArtifactError.exit_code and "manifest.json is missing" in result.stderr
    if tensorrt_missing() is not None:
        bundle = _export(tiny_checkpoint(), tmp_path, keep=4).output
        result = CliRunner().invoke(main, ["build-engine", str(bundle)])
        assert result.exit_code == BackendUnavailableError.exit_code
        assert "cannot build the engine here" in result.stderr


@pytest.mark.tensorrt
@needs_tensorrt
def test_engine_builds_and_matches_ort(tiny_checkpoint, tmp_path):
    from hiprune.runtime.tensorrt_build import build_engine_from_bundle

    bundle = _export(tiny_checkpoint(), tmp_path, precision="fp16", keep=6).output
    check, not_run = build_engine_from_bundle(bundle)
    assert not_run is None and check.ok and (bundle / "model.engine").exists()


# --- the real parser and builder (TensorRT-RTX), planted offenders, --device rtx, build-engine -----------------


@pytest.fixture(scope="module")
def fp16_bundle(tiny_checkpoint, tmp_path_factory):
    return _export(tiny_checkpoint(), tmp_path_factory.mktemp("bundle"), precision="fp16", keep=6).output


def _planted_graph(tmp_path, fp16_bundle, edit):
    """A copy of the tiny fp16 bundle with ``edit`` applied to its graph's ONNX proto."""
    bundle = shutil.copytree(fp16_bundle, tmp_path / "planted")
    model = onnx.load(bundle / "model.onnx", load_external_data=False)
    edit(model)
    onnx.save(model, bundle / "model.onnx")
    write_manifest(bundle, load_manifest(bundle))  # as if exported so: the manifest lists the planted graph
    return bundle


def _rename_topk_values(model):
    node = next(n for n in model.graph.node if n.op_type == "TopK")
    old = node.output[0]
    node.output[0] = "_"
    assert all(old not in n.input for n in model.graph.node)


def _unknown_op(model):
    model.graph.node[-1].op_type, model.graph.node[-1].domain = "Mystery", "planted"
    model.opset_import.append(onnx.helper.make_opsetid("planted", 1))


@needs_rtx
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_rename_topk_values, r"tensorrt_rtx .* failed to build model.onnx: .*duplicate tensor name \"_\""),
        (_unknown_op, r"tensorrt_rtx .* ONNX parser rejects model.onnx: .*Mystery"),
    ],
)
def test_real_parser_and_builder_report_their_own_words(fp16_bundle, tmp_path, edit, message):
    """A parse error or failed build is an error carrying TensorRT's message (the `_` name is the shipped defect)."""
    from hiprune.runtime.tensorrt_build import TENSORRT_RTX, build_serialized

    bundle = _planted_graph(tmp_path, fp16_bundle, edit)
    with pytest.raises(ExportError, match=message) as info:
        build_serialized(bundle / "model.onnx", TENSORRT_RTX, 256, 0)
    assert "\n" not in str(info.value)


@needs_rtx
def test_device_rtx_builds_the_engine_here(tiny_checkpoint, tmp_path):
    result = _export(tiny_checkpoint(), tmp_path, precision="fp16", device="rtx", build="auto", keep=6, batch=3)
    details = result.manifest["target_details"]
    engine = result.output / "model.engine"
    assert result.artifact == engine and details["engine_built"] is True
    assert (
        engine.stat().st_size
        == details["engine_build"]["engine_bytes"]
        == result.manifest["files"]["model.engine"]["bytes"]
    )
    assert details["compute_capabilities"] == ["8.0", "8.6", "8.9", "12.0", "12.1"]
    assert not (result.output / "build_engine.sh").exists()  # trtexec is TensorRT proper's; rtx rebuilds via the CLI
    if tensorrt_rtx_runtime_missing() is not None:
        assert details["engine_check"].startswith("not run: ")
    else:
        assert details["engine_check"]["indices_equal"] is True


def _listing(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@needs_rtx
def test_build_engine_is_staged_and_imports_no_torch(fp16_bundle, tmp_path):
    """An rtx bundle built later: a planted failure leaves the bundle as it was; an older manifest still builds,
    and the on-device path never imports torch or transformers."""
    bundle = _planted_graph(tmp_path, fp16_bundle, _rename_topk_values)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["target_options"]["device"] = "rtx"
    del manifest["target_details"]["engine_settings"]  # as older manifests, with only target_options
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    before = _listing(bundle)
    failed = CliRunner().invoke(main, ["build-engine", str(bundle)])
    assert failed.exit_code == ExportError.exit_code and 'duplicate tensor name "_"' in failed.stderr
    assert _listing(bundle) == before
    fixed = onnx.load(bundle / "model.onnx", load_external_data=False)
    next(n for n in fixed.graph.node if n.output[0] == "_").output[0] = "anchor_scores"
    onnx.save(fixed, bundle / "model.onnx")
    write_manifest(bundle, load_manifest(bundle))  # as if exported so: build-engine checks the graph's sha256
    script = (
        "import sys; from pathlib import Path; from hiprune.runtime.tensorrt_build import build_engine_from_bundle; "
        f"build_engine_from_bundle(Path({str(bundle)!r})); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    written = json.loads((bundle / "manifest.json").read_text())
    assert written["artifact"] == "model.engine" and written["files"]["model.engine"]["bytes"] > 0
    assert written["target_details"]["engine_build"]["compute_capabilities"][0] == "8.0"


def test_build_auto_for_a_jetson_defers_off_the_jetson(monkeypatch):
    import hiprune.targets.tensorrt as module

    monkeypatch.setattr(module, "tensorrt_missing", lambda: None)  # as on an x86 host with TensorRT and a GPU
    monkeypatch.setattr(module, "jetson_model", lambda: None)
    assert "not a Jetson Orin" in TensorRTTarget({"device": "jetson-orin"})._build_missing()
    monkeypatch.setattr(module, "jetson_model", lambda: "NVIDIA Jetson AGX Orin Developer Kit")
    assert TensorRTTarget({"device": "jetson-orin"})._build_missing() is None
    assert TensorRTTarget({"device": "gpu"})._build_missing() is None


@pytest.mark.rtx
@pytest.mark.skipif(tensorrt_rtx_runtime_missing() is not None, reason=f"{tensorrt_rtx_runtime_missing()}")
def test_rtx_engine_runs_and_matches_ort(tiny_checkpoint, tmp_path):
    from hiprune.runtime.tensorrt_build import check_engine

    result = _export(tiny_checkpoint(), tmp_path, precision="fp16", device="rtx", build="now", keep=6)
    assert result.manifest["target_details"]["engine_check"]["indices_equal"] is True
    check = check_engine(result.output / "model.onnx", result.artifact, "tensorrt_rtx", "fp16")
    assert check.ok and check.indices_equal


@needs_rtx
def test_default_model_fp16_bundle_graph_builds(tmp_path):
    """The default bundle's graph (LLaVA-1.5-7B vision tower + projector, fp16 strongly typed), through the same
    pipeline the export runs, parsed and built by TensorRT-RTX; the export's ORT checks run elsewhere."""
    from hiprune.export.models import load_encoder
    from hiprune.export.onnx_export import export_to_ir
    from hiprune.graphs.pipelines import finalize_onnx, tensorrt_ready
    from hiprune.runtime.tensorrt_build import TENSORRT_RTX, build_serialized
    from hiprune.targets.onnx import save_model

    loaded = load_encoder(None, HiPruneConfig(keep=64), False)
    model = finalize_onnx(export_to_ir(loaded.encoder, 1), {})
    del loaded
    save_model(tensorrt_ready(model, "fp16"), tmp_path / "model.onnx")
    del model
    profile = PROFILES["gpu"]
    info = build_serialized(tmp_path / "model.onnx", TENSORRT_RTX, profile.workspace_mib, 0)
    assert info.layers > 1500 and info.engine_bytes > 500e6  # 24-layer CLIP-L + projector, 0.3 B fp16 weights
