"""Every encoder family through every target: a tiny checkpoint of each exports, and each target's own check
(the artifact or the exact converted program against PyTorch) passes with exact indices."""

from __future__ import annotations

import pytest

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig

FAMILIES = {
    "llava-siglip": dict(tower="siglip", image_size=36, feature_layer=-1),
    "llava-next": dict(tower="next"),  # default pinpoint 64x64: 5 crops, k = 2 each
}
TARGET_OPTIONS = {
    "onnx": {},
    "tensorrt": {"precision": "fp32", "build": "defer"},
    "coreml": {"precision": "fp32"},
}


@pytest.mark.parametrize("target", sorted(TARGET_OPTIONS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_exports_to_target(tiny_checkpoint, tmp_path, family, target):
    path = tiny_checkpoint(**FAMILIES[family])
    config = HiPruneConfig(keep=10, alpha=0.5)
    request = ExportRequest(
        hiprune=config,
        target=target,
        model=str(path),
        batch=2,
        output=tmp_path / target,
        options=TARGET_OPTIONS[target],
    )
    result = export(request)
    manifest = result.manifest
    assert manifest["encoder"]["family"] == family
    assert result.comparison is not None and result.comparison.indices_equal, result.comparison.describe()
    assert manifest["outputs"]["indices"]["shape"] == [2, 10]
    assert manifest["outputs"]["image_embeds"]["shape"] == [2, 10, 48]
