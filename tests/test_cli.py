"""The CLI through click's CliRunner: the success path and every bad input (one line, non-zero, nothing written)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from hiprune.cli import main


def _invoke(args):
    return CliRunner().invoke(main, args)


def test_export_prints_summary(tiny_checkpoint, tmp_path):
    out = tmp_path / "artifact"
    result = _invoke(
        ["--target", "onnx", "--keep", "6", "--alpha", "0.5", "--model", str(tiny_checkpoint()), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "6 of 16" in result.stdout and "indices equal" in result.stdout
    assert "float32 (1, 6, 48)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data"]
    assert "Tracing" in result.stderr  # progress goes to stderr


def _bad_checkpoints(tiny, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(tiny / "config.json", corrupt / "config.json")
    (corrupt / "model.safetensors").write_bytes(b"garbage")
    not_vlm = tmp_path / "notvlm"
    not_vlm.mkdir()
    (not_vlm / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    return corrupt, not_vlm


BAD_INPUTS = [
    (["--keep", "0"], r"--keep 0 must be at least 1"),
    (["--keep", "-3"], r"--keep -3 must be at least 1"),
    (["--keep", "17"], r"--keep 17 is more than the encoder's N = 16 patch tokens .*--keep between 1 and 16"),
    (["--keep", "4", "--alpha", "1.0"], r"--keep 4 is too small for alpha 1.0: anchors a = .* = 1 .* 5a = 5"),
    (["--alpha", "1.5"], r"--alpha 1.5 is outside \[0, 1\]"),
    (["--alpha", "-0.1"], r"--alpha -0.1 is outside \[0, 1\]"),
    (["--object-layer", "0"], r"--object-layer 0 is outside 1..2: .*feature layer \(3 of 4\)"),
    (["--object-layer", "3"], r"--object-layer 3 is outside 1..2"),
    (["--object-layer", "40"], r"--object-layer 40 is outside 1..2"),
    (["--batch", "0"], r"--batch 0 must be at least 1"),
    (["--model", "{missing}"], r"no such directory"),
    (["--model", "{corrupt}"], r"cannot be read .*re-download"),
    (["--model", "{notvlm}"], r"model_type 'bert' is not a supported VLM; supported: LLaVA-1.5"),
    (["--output", "{existing}"], r"exists and is not empty; pass --force"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS)
def test_bad_input_one_line_nonzero_nothing_written(tiny_checkpoint, tmp_path, extra, message):
    import re

    work = tmp_path / "work"
    work.mkdir()
    corrupt, not_vlm = _bad_checkpoints(tiny_checkpoint(), tmp_path)
    existing = work / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data")
    paths = {
        "missing": str(tmp_path / "nope"),
        "corrupt": str(corrupt),
        "notvlm": str(not_vlm),
        "existing": str(existing),
    }
    extra = [e.format(**paths) for e in extra]
    args = ["--target", "onnx", "--keep", "4", "--model", str(tiny_checkpoint()), "--output", str(work / "out"), *extra]
    before = sorted(p.name for p in work.iterdir())
    result = _invoke(args)
    assert result.exit_code not in (0, 1), result.output  # 1 would be an unexpected exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written, no partial directory
    assert (existing / "keep.txt").read_text() == "user data"


def test_force_replaces_output(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    result = _invoke(
        ["--target", "onnx", "--keep", "4", "--model", str(tiny_checkpoint()), "--output", str(out), "--force"]
    )
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists() and (out / "model.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_unknown_target_lists_available():
    result = _invoke(["--target", "nope", "--keep", "4"])
    assert result.exit_code == 2 and "'onnx'" in result.stderr


def test_verbose_shows_traceback(tmp_path):
    result = _invoke(["--target", "onnx", "--keep", "4", "--model", str(tmp_path / "nope"), "--verbose"])
    assert result.exit_code != 0 and result.exception is not None
