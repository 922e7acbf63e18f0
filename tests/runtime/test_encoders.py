"""open_runner picks the runner from the manifest's artifact; the ones that cannot run here say why in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from hiprune.api import ExportRequest, export
from hiprune.backends import coreml_predict_missing, tensorrt_missing
from hiprune.config import HiPruneConfig
from hiprune.errors import ArtifactError, BackendUnavailableError
from hiprune.runtime.encoders import open_runner
from hiprune.runtime.runners import OrtRunner


def _with_artifact(source, target, name: str):
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["artifact"] = name
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_open_runner_by_manifest(tiny_vlm, tmp_path):
    result = export(
        ExportRequest(hiprune=HiPruneConfig(keep=6, alpha=0.5), model=str(tiny_vlm()), output=tmp_path / "a")
    )
    runner = open_runner(result.output)
    assert isinstance(runner, OrtRunner) and runner.providers == ("CPUExecutionProvider",)
    engine = _with_artifact(result.output, tmp_path / "engine", "model.engine")
    (engine / "model.engine").write_bytes(b"\0")
    package = _with_artifact(result.output, tmp_path / "package", "model.mlpackage")
    (package / "model.mlpackage").mkdir()
    for directory, kind, missing_here in (
        (engine, "tensorrt", tensorrt_missing()),
        (package, "coreml", coreml_predict_missing()),
    ):
        runner = open_runner(directory)
        assert runner.name == kind
        if missing_here is not None:
            with pytest.raises(BackendUnavailableError):
                runner.__enter__()
    missing = _with_artifact(result.output, tmp_path / "missing", "model.engine")
    with pytest.raises(ArtifactError, match="model.engine is missing"):
        open_runner(missing)
