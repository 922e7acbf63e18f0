"""The README's commands stay true: its two make targets exist and do what it says; its API snippet runs;
and the demo's library equivalent exports the full-size default model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.runtime import OrtRunner

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _make_recipe(target: str) -> str:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, f"Makefile has no {target} target"
    return match.group(1)


def test_readme_commands_exist():
    assert "make demo" in README and "make test" in README
    assert "hiprune-export --target onnx --keep 64" in _make_recipe("demo")
    assert "hiprune-run out/demo-onnx-k64 --image out/demo-photo.png" in _make_recipe("demo")
    assert "pytest" in _make_recipe("test")
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_api_snippet_runs(tiny_checkpoint, tmp_path, monkeypatch):
    snippet = re.search(r"```python\n(.*?)```", README, re.DOTALL).group(1)
    snippet = snippet.replace('"path/to/llava-1.5-7b-hf"', repr(str(tiny_checkpoint())))
    snippet = snippet.replace("keep=64", "keep=8").replace('"out/llava-k64"', repr(str(tmp_path / "o")))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.artifact == tmp_path / "o" / "model.onnx" and result.artifact.is_file()
    assert result.manifest["outputs"]["indices"]["shape"] == [1, 8]


def test_demo_default_model(tmp_path):
    """`make demo`: the export (LLaVA-1.5-7B vision tower + projector architecture, random weights, K = 64), then
    hiprune-run over it into the built-in 4096-wide language model (cut to 1 layer here, 2 in the demo)."""
    result = export(ExportRequest(hiprune=HiPruneConfig(keep=64), target="onnx", output=tmp_path / "demo"))
    assert result.summary()["kept tokens"] == "64 of 576"
    assert result.manifest["outputs"]["image_embeds"]["shape"] == [1, 64, 4096]
    with OrtRunner(result.artifact) as runner:
        out = runner.infer({"pixel_values": np.zeros((1, 3, 336, 336), np.float32)})
    assert out["indices"].shape == (1, 64) and np.all(np.diff(out["indices"][0]) > 0)
    _demo_run(result.output, tmp_path)


def _demo_run(artifact: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from hiprune.run_cli import main

    Image.radial_gradient("L").convert("RGB").save(tmp_path / "photo.png")
    args = ["--image", tmp_path / "photo.png", "--prompt", "Hi", "--llm-layers", "1", "--max-new-tokens", "2"]
    run = CliRunner().invoke(main, [str(a) for a in [artifact, *args, "--warmup", "0", "--json", tmp_path / "r.json"]])
    assert run.exit_code == 0, run.output
    assert "RANDOM" in run.output and "time to first token" in run.output
    body = json.loads((tmp_path / "r.json").read_text())
    assert body["kept_tokens"] == 64 and len(body["generated_ids"]) == 2
