"""--target coreml on Linux: conversion, the saved spec (static shapes, dtypes, metadata), the MIL lowering,
and the decomposed program against the oracle. Predictions need macOS and skip here."""

from __future__ import annotations

import coremltools as ct  # installed by make test (.[coreml]): a broken install fails here, never skips
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from oracle import paper_select, reference_scores

from hiprune.api import ExportRequest, export
from hiprune.backends import coreml_predict_missing
from hiprune.cli import main
from hiprune.config import HiPruneConfig
from hiprune.errors import BackendUnavailableError
from hiprune.export.coreml_export import export_for_coreml
from hiprune.export.models import load_encoder
from hiprune.runtime.coreml_runner import CoreMLRunner

ARRAY = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType


def _export(path, tmp_path, batch=1, **options_and_config):
    options = {
        k: options_and_config.pop(k) for k in ("precision", "min_target", "compute_units") if k in options_and_config
    }
    return export(
        ExportRequest(
            hiprune=HiPruneConfig(**options_and_config),
            target="coreml",
            model=str(path),
            batch=batch,
            output=tmp_path / "cm",
            options=options,
        )
    )


def _spec(result):
    return ct.models.MLModel(str(result.artifact), skip_model_load=True)


@pytest.mark.parametrize(
    ("geometry", "config", "batch", "precision"),
    [
        (dict(), dict(keep=4), 1, "fp16"),
        (dict(image_size=40), dict(keep=12, alpha=0.5, neighbors="grid"), 2, "fp16"),
        (dict(image_size=56, layers=6), dict(keep=30, alpha=0.2), 1, "fp32"),
    ],
)
def test_package_spec(tiny_checkpoint, tmp_path, geometry, config, batch, precision):
    path = tiny_checkpoint(**geometry)
    result = _export(path, tmp_path, batch=batch, precision=precision, **config)
    model = _spec(result)
    spec = model.get_spec()
    keep, size = config["keep"], geometry.get("image_size", 32)
    outputs = {o.name: o.type.multiArrayType for o in spec.description.output}
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == ["pixel_values"] and tuple(inputs["pixel_values"].shape) == (batch, 3, size, size)
    assert tuple(outputs["image_embeds"].shape) == (batch, keep, 48)
    assert tuple(outputs["indices"].shape) == (batch, keep)
    assert ARRAY.Name(outputs["image_embeds"].dataType) == ("FLOAT16" if precision == "fp16" else "FLOAT32")
    assert ARRAY.Name(outputs["indices"].dataType) == "INT32"
    meta = model.user_defined_metadata
    assert meta["hiprune.keep"] == str(keep) and meta["hiprune.source"] == str(path)
    assert meta["hiprune.compute_units"] == "all"
    assert all(d.shortDescription for d in (*spec.description.input, *spec.description.output))
    assert spec.specificationVersion == 8  # iOS17 / macOS14
    ranked, linear = _mil_dtypes(spec)
    assert ranked and set(ranked) == {"FLOAT32"}  # every topk ranks fp32 scores, at either precision
    assert set(linear) == {"FLOAT16" if precision == "fp16" else "FLOAT32"}  # the trunk is in the package's precision


def _mil_dtypes(spec):
    """The dtypes topk ranks and linear layers produce, read from the saved MIL program's value types."""
    ops = [
        op for f in spec.mlProgram.functions.values() for b in f.block_specializations.values() for op in b.operations
    ]
    name = ct.proto.MIL_pb2.DataType.Name
    produced = {out.name: name(out.type.tensorType.dataType) for op in ops for out in op.outputs}
    ranked = [produced[op.inputs["x"].arguments[0].name] for op in ops if op.type == "topk"]
    return ranked, [produced[op.outputs[0].name] for op in ops if op.type == "linear"]


def test_mil_program_lowers_selection_to_core_ml_ops(tiny_checkpoint, tmp_path):
    result = _export(tiny_checkpoint(), tmp_path, keep=10, alpha=1.0, min_target="iOS18")
    ops = set(result.manifest["target_details"]["mil_ops"])
    assert {"topk", "scatter_along_axis", "gather_along_axis"} <= ops
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    assert all(ct.target.iOS18 in SSAOpRegistry.core_ops[op] for op in ops)
    assert _spec(result).get_spec().specificationVersion == 9


@pytest.mark.parametrize(
    ("geometry", "config", "batch"),
    [
        (dict(), dict(keep=10, alpha=1.0), 1),
        (dict(image_size=40), dict(keep=15, alpha=0.5, neighbors="grid", object_layer=1), 3),
        (dict(image_size=56, layers=6), dict(keep=20, alpha=0.0), 1),
    ],
)
def test_decomposed_program_matches_oracle(tiny_checkpoint, reference_model, geometry, config, batch):
    """The exact program handed to coremltools (custom op decomposed) on the oracle's indices."""
    path = tiny_checkpoint(**geometry)
    loaded = load_encoder(str(path), HiPruneConfig(**config))
    program = export_for_coreml(loaded.encoder, batch)
    assert not any("hiprune" in str(n.target) for n in program.graph.nodes)
    size = geometry.get("image_size", 32)
    pixel_values = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(4)) * 2
    resolved = loaded.encoder.plan
    with torch.no_grad():
        _, indices = program.module()(pixel_values)
        s_obj, s_deep, _ = reference_scores(
            reference_model(path), pixel_values, resolved.object_layer, resolved.deep_layer
        )
    want = paper_select(
        s_obj, s_deep, config["keep"], config["alpha"], resolved.grid_width, config.get("neighbors", "paper")
    )
    assert torch.equal(indices, want)


def test_default_model_converts(tmp_path):
    result = export(ExportRequest(hiprune=HiPruneConfig(keep=64), target="coreml", output=tmp_path / "default"))
    outputs = {o.name: o.type.multiArrayType for o in _spec(result).get_spec().description.output}
    assert tuple(outputs["image_embeds"].shape) == (1, 64, 4096)
    assert ARRAY.Name(outputs["image_embeds"].dataType) == "FLOAT16"
    assert result.comparison.indices_equal


@pytest.mark.skipif(coreml_predict_missing() is None, reason="this machine can run Core ML predictions")
def test_runner_says_predictions_need_macos(tiny_checkpoint, tmp_path):
    result = _export(tiny_checkpoint(), tmp_path, keep=4)
    with pytest.raises(BackendUnavailableError, match="Core ML predictions need macOS"):
        with CoreMLRunner(result.artifact):
            pass
    assert result.manifest["target_details"]["prediction"].startswith("not run: Core ML predictions need macOS")


@pytest.mark.macos
@pytest.mark.skipif(coreml_predict_missing() is not None, reason=f"{coreml_predict_missing()}")
def test_predictions_match_ort(tiny_checkpoint, tmp_path):
    from hiprune.runtime import OrtRunner

    path = tiny_checkpoint()
    package = _export(path, tmp_path, keep=6, precision="fp32").artifact
    onnx = export(ExportRequest(hiprune=HiPruneConfig(keep=6), model=str(path), output=tmp_path / "onnx")).artifact
    pixel_values = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    with CoreMLRunner(package) as cm, OrtRunner(onnx) as ort:
        got, want = cm.infer({"pixel_values": pixel_values}), ort.infer({"pixel_values": pixel_values})
    np.testing.assert_array_equal(got["indices"], want["indices"])
    assert np.abs(got["image_embeds"] - want["image_embeds"]).max() < 1e-3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "bf16"], r"--precision 'bf16' is not available for --target coreml; use one of: fp16, fp32"),
        (["--min-target", "iOS16"], r"--min-target 'iOS16' is not available for --target coreml"),
        (["--device", "gpu"], r"--device does not apply to --target coreml; it applies to: tensorrt"),
    ],
)
def test_bad_options(tiny_checkpoint, tmp_path, args, message):
    import re

    result = CliRunner().invoke(
        main,
        [
            "--target",
            "coreml",
            "--keep",
            "4",
            "--model",
            str(tiny_checkpoint()),
            "--output",
            str(tmp_path / "o"),
            *args,
        ],
    )
    assert result.exit_code == 2 and re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "o").exists()
