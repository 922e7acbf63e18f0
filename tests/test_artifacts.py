"""Artifact directories: verify after a copy, filesystem faults on the output path, stale staging directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hiprune.api import ExportRequest, export
from hiprune.artifacts import MANIFEST, staged_output, verify_artifact
from hiprune.cli import main
from hiprune.config import HiPruneConfig
from hiprune.errors import ArtifactError, OutputError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifact(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "onnx"
    export(ExportRequest(hiprune=HiPruneConfig(keep=4), model=str(tiny_checkpoint()), output=out))
    return out


def _copy(artifact, tmp_path):
    return Path(shutil.copytree(artifact, tmp_path / "copy"))


def test_verify_accepts_a_faithful_copy(artifact, tmp_path):
    copy = _copy(artifact, tmp_path)
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {copy} matches its manifest: 2 files") and "sha256" in result.stdout


def test_verify_names_a_truncated_file(artifact, tmp_path):
    copy = _copy(artifact, tmp_path)
    data = copy / "model.onnx.data"
    size = data.stat().st_size
    with data.open("r+b") as handle:
        handle.truncate(size - 1000)
    result = CliRunner().invoke(main, ["verify", str(copy), "--sizes-only"])
    assert result.exit_code == 8
    assert result.stderr.strip() == (
        f"error: {data} is truncated: {size - 1000} of {size} bytes; copy the artifact directory again, or re-export it"
    )


def test_verify_full_catches_a_changed_byte_that_sizes_miss(artifact, tmp_path):
    copy = _copy(artifact, tmp_path)
    data = copy / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    sizes_only = verify_artifact(copy, full=False)
    assert sizes_only.files == 2 and not sizes_only.full
    with pytest.raises(ArtifactError, match=r"model.onnx.data is corrupt: its sha256 differs"):
        verify_artifact(copy, full=True)
    from hiprune.runtime.encoders import open_runner

    assert open_runner(sizes_only).name == "onnxruntime"  # what the caller already checked is not checked again
    with pytest.raises(ArtifactError, match=r"model.onnx.data is corrupt: its sha256 differs"):
        open_runner(sizes_only, verify="full")  # a size-checked artifact is hashed when sha256 is asked for


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.onnx").unlink(), r"model.onnx is missing"),
        (lambda d: (d / MANIFEST).unlink(), r"manifest.json is missing: not a hiprune-export artifact"),
        (lambda d: (d / MANIFEST).write_text("{"), r"manifest.json cannot be read"),
        (
            lambda d: (d / MANIFEST).write_text(
                json.dumps({**json.loads((d / MANIFEST).read_text()), "format": "x/9"})
            ),
            r"has format 'x/9'; this version reads hiprune-export/1",
        ),
    ],
)
def test_verify_refuses_incomplete_or_unknown_artifacts(artifact, tmp_path, damage, message):
    import re

    copy = _copy(artifact, tmp_path)
    damage(copy)
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 8 and len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr


def test_build_engine_verifies_the_bundle_first(artifact, tmp_path):
    """A truncated file is named before any TensorRT question is asked (exit 8, not 6 or a parser error); an
    intact artifact of another target is refused next, from the same manifest (exit 2)."""
    result = CliRunner().invoke(main, ["build-engine", str(artifact)])
    assert result.exit_code == 2 and "is not a TensorRT bundle (exported for --target onnx)" in result.stderr
    copy = _copy(artifact, tmp_path)
    with (copy / "model.onnx").open("r+b") as handle:
        handle.truncate(10)
    result = CliRunner().invoke(main, ["build-engine", str(copy)])
    assert result.exit_code == 8 and "model.onnx is truncated: 10 of" in result.stderr


# --- filesystem faults on the output path: one line, exit 4, nothing left behind ---------------------------------


def _export_cli(args, tiny, cwd=None):
    return CliRunner().invoke(main, ["--target", "onnx", "--keep", "4", "--model", str(tiny), *args])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{tmp}/file.txt/sub", r"file.txt is a file, not a directory; pass --output under a directory"),
        ("{tmp}/file.txt", r"--output .*file.txt is a file; pass a directory path"),
        (".", r"--output \. is the working directory or contains it; .*pass a new directory"),
        ("..", r"--output \.\. is the working directory or contains it"),
        ("/proc/hiprune-nope", r"cannot create a directory in /proc: .*pass --output in an existing, writable dir"),
    ],
)
def test_unusable_output_paths(tiny_checkpoint, tmp_path, monkeypatch, output, message):
    import re

    if output.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc on this OS")
    (tmp_path / "file.txt").write_text("user data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _export_cli(["--output", output.format(tmp=tmp_path), "--force"], tiny_checkpoint())
    assert result.exit_code == 4, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(message, result.stderr), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any(work.iterdir())
    assert (tmp_path / "file.txt").read_text() == "user data"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to any directory")
def test_unwritable_parent(tiny_checkpoint, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = _export_cli(["--output", str(locked / "out")], tiny_checkpoint())
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 4 and f"{locked} is not writable by this user" in result.stderr
    assert not any(locked.iterdir())


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a small tmpfs in a user namespace here")
def test_full_and_read_only_filesystems(tiny_checkpoint, tmp_path):
    """A real 200 KiB tmpfs (the tiny artifact needs about 290 KiB) and the same tmpfs remounted read-only."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    cli = f"{shlex_quote(sys.executable)} -m hiprune.cli --target onnx --keep 4 --model {tiny_checkpoint()}"
    script = (
        f"mount -t tmpfs -o size=200k tmpfs {mount} && cd {REPO} && "
        f"{cli} --output {mount}/out; echo rc=$?; ls -A {mount}; "
        f"mount -o remount,ro {mount} && {cli} --output {mount}/out; echo rc=$?"
    )
    run = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.stdout.split() == ["rc=4", "rc=4"], (run.stdout, run.stderr)  # and `ls -A` printed nothing
    assert len(errors) == 2 and "Traceback" not in run.stderr, run.stderr
    assert f"--output {mount}/out: cannot write" in errors[0] and "no space left on the device" in errors[0]
    assert errors[1] == (
        f"error: --output {mount}/out: {mount} is on a read-only filesystem; "
        "pass --output in a directory you can write to"
    )


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# --- stale staging directories -----------------------------------------------------------------------------------


def test_stale_staging_from_a_dead_process_is_removed_and_said(tmp_path):
    from hiprune import artifacts

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".out.partial-{artifacts._HOST}-{dead.pid}-abc"
        running = tmp_path / f".out.partial-{artifacts._HOST}-{alive.pid}-def"
        legacy = tmp_path / ".out.partial-k2j4h1"
        for path in (stale, running, legacy):
            path.mkdir()
            (path / "model.onnx").write_text("half")
        said: list[str] = []
        with staged_output(tmp_path / "out", force=False, notify=said.append) as stage:
            (stage / "model.onnx").write_text("new")
    finally:
        alive.kill()
        alive.wait()
    assert not stale.exists() and running.exists() and legacy.exists()
    assert said == [
        f"Removed {stale}, left by an interrupted export (process {dead.pid} is gone).",
        f"Found {legacy} from an interrupted export; remove it if no export is running.",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, legacy.name, "out"])


def test_error_inside_staging_leaves_nothing(tmp_path):
    with pytest.raises(OutputError):
        with staged_output(tmp_path / "out", force=False) as stage:
            (stage / "part").write_text("x")
            raise OutputError("boom")
    assert list(tmp_path.iterdir()) == []


# --- the memory estimate, against peaks measured on this repository's machine (export/memory.py's docstring) ---


def test_memory_estimate_covers_measured_peaks_without_refusing_sane_batches():
    from hiprune.export.adapters import EncoderSpec
    from hiprune.export.memory import estimate_memory

    default = EncoderSpec("llava", (336, 336), 24, 23, 9, (24, 24), 1024, 4096)
    tiny = EncoderSpec("llava", (32, 32), 4, 3, 1, (4, 4), 32, 48)
    # measured check slopes: 60.7 MiB per image (default, batches 1 and 3); 57-67 KiB per image (tiny, 1k to 64k)
    big = estimate_memory(default, 1, 1_200_000_000, heads=16, intermediate=4096)
    small = estimate_memory(tiny, 65536, 600_000, heads=4, intermediate=64)
    assert 60.7 * 2**20 <= big.check_per_image <= 4 * 60.7 * 2**20
    assert 67 * 2**10 <= small.check_per_image <= 4 * 67 * 2**10
    assert small.check >= 3821 * 2**20  # the measured check peak at batch 65,536 (3.8 GiB above the loaded process)
    assert big.largest_batch(16 * 2**30) >= 64  # a 16 GiB machine still exports the default model at batch 64


def test_runners_verify_the_artifact_first(artifact, tmp_path):
    from hiprune.runtime.encoders import open_runner

    copy = _copy(artifact, tmp_path)
    with (copy / "model.onnx.data").open("r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ArtifactError, match=r"model.onnx.data is truncated: 100 of \d+ bytes"):
        open_runner(copy)


def test_written_atomically_appears_whole_with_ordinary_permissions_or_not_at_all(tmp_path):
    import os

    from hiprune.artifacts import written_atomically

    target = tmp_path / "table.npy"
    with pytest.raises(RuntimeError), written_atomically(target) as temp:
        temp.write_bytes(b"half")
        assert temp.parent == tmp_path and temp.suffix == ".npy" and not target.exists()
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp
    with written_atomically(target) as temp:
        temp.write_bytes(b"whole")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0o600
