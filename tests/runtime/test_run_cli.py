"""``hiprune-run``: the JSON it writes, and one-line errors with a non-zero exit for bad input."""

from __future__ import annotations

import collections
import json

import pytest
from click.testing import CliRunner

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.run_cli import main
from hiprune.runtime.llm.base import STAGES

JSON_KEYS = {"generated_ids", "text", "kept_tokens", "llm_runtime", "device", "timings_ms", "peak_memory_mb"}


@pytest.fixture(scope="module")
def artifact(tiny_vlm, tmp_path_factory):
    path = tiny_vlm(image_size=48)
    out = tmp_path_factory.mktemp("cli") / "k12"
    export(ExportRequest(hiprune=HiPruneConfig(keep=12, alpha=0.5), model=str(path), output=out))
    return out


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _counted(monkeypatch, calls, module, name):
    real = getattr(module, name)

    def counting(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)


def test_run_writes_json(artifact, photo_file, tiny_vlm, tmp_path, monkeypatch):
    """With --llm naming the artifact's own checkpoint: the manifest is read once, the weights digest computed once."""
    import hiprune.artifacts
    import hiprune.runtime.chain
    import hiprune.runtime.llm.loading

    calls = collections.Counter()
    _counted(monkeypatch, calls, hiprune.artifacts, "load_manifest")
    for module in (hiprune.runtime.chain, hiprune.runtime.llm.loading):
        _counted(monkeypatch, calls, module, "checkpoint_digest")
    out = tmp_path / "run.json"
    args = ["--prompt", "Describe it.", "--max-new-tokens", "5", "--warmup", "0", "--json", out]
    result = _run(artifact, "--image", photo_file, "--llm", tiny_vlm(image_size=48), *args)
    assert result.exit_code == 0, result.output
    assert calls == {"load_manifest": 1, "checkpoint_digest": 1}
    body = json.loads(out.read_text())
    assert JSON_KEYS <= set(body) and set(body["timings_ms"]) == set(STAGES)
    assert body["kept_tokens"] == 12 and body["llm_runtime"] == "transformers" and body["device"] == "cpu"
    assert 1 <= len(body["generated_ids"]) <= 5 and all(isinstance(i, int) for i in body["generated_ids"])
    assert body["peak_memory_mb"]["host_rss"] > 0
    assert body["preprocess"] == "CLIPImageProcessorPil on host" and body["preprocess_note"] is None
    assert body["llm_precision"] == "float32"
    assert "time to first token" in result.output


def test_a_runtime_that_is_not_installed_is_refused_before_the_language_model_loads(
    artifact, photo_file, tmp_path, monkeypatch
):
    import sys

    import hiprune.runtime.chain

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what a machine without the llamacpp extra has
    monkeypatch.setattr(hiprune.runtime.chain, "load_language_model", lambda *a, **k: pytest.fail("loaded"))
    out = tmp_path / "never.json"
    result = _run(artifact, "--image", photo_file, "--prompt", "Hi", "--llm-runtime", "llama.cpp", "--json", out)
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 6 and len(lines) == 1, result.output
    assert "pip install 'hiprune-export[llamacpp]'" in lines[0] and not out.exists()


def test_bad_input_one_line_error(artifact, photo_file, tiny_vlm, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    other = tiny_vlm(image_size=48, seed=1)
    cases = {  # the README's exit codes: 8 an artifact, 2 a setting or option, 3 the checkpoint
        "no such directory": (8, [tmp_path / "missing", "--image", photo_file]),
        "cannot be decoded": (2, [artifact, "--image", broken]),
        "must be at least 1": (2, [artifact, "--image", photo_file, "--max-new-tokens", "0"]),
        "is not the checkpoint": (3, [artifact, "--image", photo_file, "--llm", other]),
        "q8_0 is not one the transformers": (2, [artifact, "--image", photo_file, "--llm-precision", "q8_0"]),
    }
    for expected, (code, args) in cases.items():
        out = tmp_path / "never.json"
        result = _run(*args, "--prompt", "Hi", "--warmup", "0", "--json", out)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == code and len(lines) == 1 and expected in lines[0], (expected, result.output)
        assert "Traceback" not in result.output and not out.exists()
