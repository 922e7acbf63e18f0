"""The CLI through click's CliRunner: the success path and every bad input (one line, non-zero, nothing written)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from onnx_ir.passes import PostconditionError

from hiprune.cli import main
from hiprune.errors import ExportError

REPO = Path(__file__).resolve().parents[1]


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
    (["--no-prune", "--keep", "3"], r"--keep 3 does not apply with --no-prune, which keeps every token; drop it"),
    (["--no-prune", "--alpha", "0.5", "--object-layer", "2"], r"--alpha 0.5, --object-layer 2 does not apply"),
    (["--no-prune", "--neighbors", "grid"], r"--neighbors grid does not apply with --no-prune"),
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


def _cli_process(*args):
    return subprocess.run(
        [sys.executable, "-m", "hiprune.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_verbose_shows_traceback(tmp_path):
    """In a real process: --verbose prints the traceback of the error itself; without it, one line and exit 3."""
    args = ["--target", "onnx", "--keep", "4", "--model", str(tmp_path / "nope")]
    plain, verbose = _cli_process(*args), _cli_process(*args, "--verbose")
    errors = [line for line in plain.stderr.splitlines() if line.startswith("error:")]
    assert plain.returncode == 3 and len(errors) == 1 and "Traceback" not in plain.stderr, plain.stderr
    assert verbose.returncode == 1, verbose.stderr
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("hiprune.errors.CheckpointError: ")


def _errors(result):
    """stderr's lines other than the ✓ progress lines (which precede a failure in a later step)."""
    assert "Traceback" not in result.output
    return [line for line in result.stderr.strip().splitlines() if not line.startswith("✓")]


def _hooked_loader(monkeypatch, hook):
    """Wraps the encoder loader so ``hook`` runs on the projector's output (export and checks use this encoder)."""
    import hiprune.export.models as models

    load = models.load_encoder

    def loader(*args, **kwargs):
        loaded = load(*args, **kwargs)
        loaded.encoder.projector.register_forward_hook(lambda module, inputs, output: hook(output))
        return loaded

    monkeypatch.setattr(models, "load_encoder", loader)


def test_artifact_that_disagrees_with_pytorch_is_refused(tiny_checkpoint, tmp_path, monkeypatch):
    """The ONNX graph is traced without the hook's shift, PyTorch runs with it: the post-export gate must refuse."""
    import torch

    _hooked_loader(monkeypatch, lambda out: out if torch.compiler.is_exporting() else out + 0.5)
    result = _invoke(
        ["--target", "onnx", "--keep", "4", "--model", str(tiny_checkpoint()), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 5, result.output
    (line,) = _errors(result)
    assert line.startswith("error: the onnx artifact is not verified against PyTorch: model.onnx on ONNX Runtime")
    assert "FAILED image_embeds: max|Δ|" in line
    assert list(tmp_path.iterdir()) == []


def test_empty_exception_message_becomes_one_line(tiny_checkpoint, tmp_path, monkeypatch):
    """``AssertionError()`` (no message, common inside torch) raised while tracing: one line, exit 5."""

    def fail(out):
        raise AssertionError()

    _hooked_loader(monkeypatch, fail)
    result = _invoke(
        ["--target", "onnx", "--keep", "4", "--model", str(tiny_checkpoint()), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 5, result.output
    assert _errors(result) == ["error: torch.onnx.export failed: AssertionError; rerun with --verbose"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        (ExportError("op table: TopK is planted here; fix it"), "error: op table: TopK is planted here; fix it"),
        (
            PostconditionError("graph value 'x' has shape [N]; expected static dimensions only"),
            "error: the onnx export failed: PostconditionError: graph value 'x' has shape [N]; expected static "
            "dimensions only; rerun with --verbose for the traceback",
        ),
    ],
)
def test_pass_errors_arrive_unwrapped(tiny_checkpoint, tmp_path, monkeypatch, planted, expected):
    """A pass's error reaches the user as one line, though onnx-ir's PassManager wraps it in PassError."""
    from hiprune.graphs.passes import StaticShapesPass

    def call(self, model):
        raise planted

    monkeypatch.setattr(StaticShapesPass, "call", call)
    result = _invoke(
        ["--target", "onnx", "--keep", "4", "--model", str(tiny_checkpoint()), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 5 and _errors(result) == [expected], result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (
            ["--precision", "int8", "build-engine", "{tmp}"],
            "--precision int8 applies to exports, not to `build-engine`",
            2,
        ),
        (["--keep", "3", "--no-prune", "verify", "{tmp}"], "--keep 3, --no-prune apply to exports, not to `verify`", 2),
        (["--allow-pickle", "--target", "onnx"], "--allow-pickle applies to a checkpoint given with --model", 2),
    ],
)
def test_options_where_they_do_not_apply(tmp_path, monkeypatch, args, message, code):
    monkeypatch.chdir(tmp_path)
    result = _invoke([a.format(tmp=tmp_path) for a in args])
    (line,) = _errors(result)
    assert result.exit_code == code and line.startswith(f"error: {message}"), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_verbose_before_a_subcommand_applies(tmp_path):
    result = _invoke(["--verbose", "verify", str(tmp_path / "nope")])
    assert type(result.exception).__name__ == "ArtifactError"  # raised for a traceback, not turned into exit 8


def test_memory_refusal_is_quick_and_small(tiny_checkpoint, tmp_path):
    """A batch that cannot fit is refused before tracing: one line, exit 7, the process stays small."""
    script = (
        "import resource, subprocess, sys; "
        f"run = subprocess.run([sys.executable, '-m', 'hiprune.cli', '--target', 'onnx', '--keep', '4', '--model', "
        f"{str(tiny_checkpoint())!r}, '--batch', '10000000', '--output', {str(tmp_path / 'o')!r}], "
        "capture_output=True, text=True); "
        "print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(run.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    code, max_rss_kib = map(int, done.stdout.splitlines()[0].split())
    errors = [line for line in done.stdout.splitlines()[1:] if line.startswith("error:")]
    assert code == 7 and len(errors) == 1 and "the largest batch that fits is" in errors[0], done.stdout
    assert max_rss_kib < 1.5 * 2**20  # KiB: the loaded tiny model, never the batch
    assert list(tmp_path.iterdir()) == []
