"""Artifact directories: written into a temporary directory and moved into place only when complete."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from hiprune.errors import OutputExistsError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "hiprune-export/1"
VERSIONED_PACKAGES = ("hiprune-export", "torch", "transformers", "onnx", "onnxscript", "onnx-ir", "onnxruntime")


def check_output_dir(output: Path, force: bool) -> None:
    """Refuses an existing non-empty directory (or a file) unless ``force``."""
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"--output {output} is a file; pass a directory path")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise OutputExistsError(
            f"--output {output} exists and is not empty; pass --force to replace it or choose another"
        )


@contextlib.contextmanager
def staged_output(output: Path, force: bool) -> Iterator[Path]:
    """Yields an empty staging directory; on success it replaces ``output``, on error it is removed.

    The staging directory sits beside ``output`` (or its nearest existing parent) so the final move is a rename.
    """
    check_output_dir(output, force)
    anchor = output.parent
    while not anchor.exists():
        anchor = anchor.parent
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=anchor))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    try:
        yield stage
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, trash / "old")
            os.replace(stage, output)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(stage, output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


GENERATED_KEYS = ("format", "created", "versions", "files")  # what write_manifest adds to a body


def write_manifest(directory: Path, body: Mapping[str, Any]) -> dict[str, Any]:
    """Writes ``manifest.json``: ``body`` plus versions, time and the sha256/size of every other file.

    Returns the manifest as written. A ``body`` that is an earlier manifest has its generated keys renewed.
    """
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{key: value for key, value in body.items() if key not in GENERATED_KEYS},
        "versions": library_versions(),
        "files": files,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text())
