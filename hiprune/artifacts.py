"""Artifact directories: written into a temporary directory and moved into place only when complete."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import glob
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from hiprune.errors import ArtifactError, OutputError, OutputExistsError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "hiprune-export/1"
KNOWN_FORMATS = (MANIFEST_FORMAT,)
VERSIONED_PACKAGES = ("hiprune-export", "torch", "transformers", "onnx", "onnxscript", "onnx-ir", "onnxruntime")
STAGE_KINDS = ("partial", "old")  # .NAME.partial-*: an artifact being built; .NAME.old-*: one being replaced
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_FS_FAULTS = {
    errno.ENOSPC: ("no space left on the device", "free space or pass --output on another filesystem"),
    errno.EDQUOT: ("disk quota exceeded", "free space or pass --output on another filesystem"),
    errno.EROFS: ("the filesystem is read-only", "pass --output on a writable filesystem"),
    errno.EACCES: ("permission denied", "pass --output in a directory you can write to"),
    errno.EPERM: ("operation not permitted", "pass --output in a directory you can write to"),
    errno.ENOENT: ("it cannot be created there", "pass --output in an existing, writable directory"),
    errno.ENOTDIR: ("a parent is a file, not a directory", "pass --output under a directory"),
    errno.EBUSY: ("it is in use (a mount point or the working directory)", "pass a new directory as --output"),
}


def check_output_dir(output: Path, force: bool) -> None:
    """Refuses a file, a non-empty directory (unless ``force``), the working directory or one of its ancestors,
    and a path whose nearest existing parent is a file or not writable — before anything is loaded."""
    here, target = Path.cwd().resolve(), output.resolve()
    if here == target or target in here.parents:
        raise OutputError(
            f"--output {output} is the working directory or contains it; replacing it would pull the directory "
            "you are in away; pass a new directory such as ./hiprune-out"
        )
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"--output {output} is a file; pass a directory path")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise OutputExistsError(
            f"--output {output} exists and is not empty; pass --force to replace it or choose another"
        )
    anchor = nearest_existing(output.parent)
    if not anchor.is_dir():
        raise OutputError(f"--output {output}: {anchor} is a file, not a directory; pass --output under a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        cause = "is on a read-only filesystem" if _read_only(anchor) else "is not writable by this user"
        raise OutputError(f"--output {output}: {anchor} {cause}; pass --output in a directory you can write to")


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (where the staging directory and missing parents go)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def output_fault(
    exc: OSError, output: Path, stage: Path | None = None, where: Path | None = None
) -> OutputError | None:
    """One line naming the path, the cause and the fix for a filesystem fault while writing ``output``; ``None``
    where ``exc`` is not about the output (a file read elsewhere). Paths inside ``stage`` are named as they would
    have been in ``output``."""
    named = Path(exc.filename) if exc.filename else None
    inside = stage is not None and named is not None and stage in (named.absolute(), *named.absolute().parents)
    if exc.errno not in _FS_FAULTS or not (where or inside or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
        return None
    cause, fix = _FS_FAULTS[exc.errno]
    if inside and named is not None and stage is not None:
        named = output / named.absolute().relative_to(stage)
    path = where or named or output
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(nearest_existing(path)).free
        cause += f" ({human_size(free)} free there)"
    action = "cannot create a directory in" if where else "cannot write"
    return OutputError(f"--output {output}: {action} {path}: {cause}; nothing was written; {fix}")


def _stage_prefix(output: Path, kind: str) -> str:
    return f".{output.name}.{kind}-{_HOST}-{os.getpid()}-"


def remove_stale_stages(output: Path, anchor: Path) -> list[str]:
    """Removes this host's ``.NAME.partial-*`` / ``.NAME.old-*`` directories whose process is gone; returns one
    line per directory removed, or found but left because its owner cannot be told."""
    said = []
    for kind in STAGE_KINDS:
        for path in sorted(anchor.glob(f".{glob.escape(output.name)}.{kind}-*")):
            owner = path.name[len(f".{output.name}.{kind}-") :].split("-")
            if len(owner) == 3 and owner[0] == _HOST and owner[1].isdigit():
                if _alive(int(owner[1])):
                    continue
                shutil.rmtree(path, ignore_errors=True)
                said.append(f"Removed {path}, left by an interrupted export (process {owner[1]} is gone).")
            elif path.is_dir():
                said.append(f"Found {path} from an interrupted export; remove it if no export is running.")
    return said


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staged_output(output: Path, force: bool, notify: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Yields an empty staging directory; on success it replaces ``output``, on any error it is removed.

    The staging directory sits beside ``output`` (or its nearest existing parent) so the final move is a rename;
    stale ones from interrupted exports are removed first (and ``notify`` says so). Filesystem faults become one
    :class:`OutputError` naming the path, the cause and the fix.
    """
    check_output_dir(output, force)
    anchor = nearest_existing(output.parent)
    for line in remove_stale_stages(output, anchor):
        (notify or (lambda _: None))(line)
    try:
        stage = Path(tempfile.mkdtemp(prefix=_stage_prefix(output, "partial"), dir=anchor))
    except OSError as exc:
        raise (output_fault(exc, output, where=anchor) or exc) from exc
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    try:
        yield stage
        _move_into_place(stage, output)
    except BaseException as exc:
        fault = _write_fault(exc, output, stage)
        shutil.rmtree(stage, ignore_errors=True)
        if fault is not None:
            raise fault from exc
        raise


def ensure_space(stage: Path, needed: int, output: Path) -> None:
    """Refuses before writing when the filesystem under ``stage`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(stage).free
    if free < needed:
        raise OutputError(
            f"--output {output}: the artifact needs at least {human_size(needed)} and its filesystem has "
            f"{human_size(free)} free; free space or pass --output on another filesystem"
        )


def human_size(size: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``140.2 MiB``, ``3.8 GiB`` (the summary, memory and disk messages)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        value /= 1024
    return f"{value:.1f} GiB"


def _write_fault(exc: BaseException, output: Path, stage: Path) -> OutputError | None:
    """A filesystem fault behind ``exc``: by errno, or an errno-less write error (numpy's ``tofile``, which
    onnx-ir saves weights with, drops ENOSPC's errno and reports "problem writing element N")."""
    if not isinstance(exc, OSError):
        return None
    if (fault := output_fault(exc, output, stage=stage)) is not None:
        return fault
    if exc.errno is not None or "writ" not in str(exc).lower():
        return None
    try:
        free = shutil.disk_usage(stage).free
    except OSError:
        return None
    return OutputError(
        f"--output {output}: writing the artifact failed ({str(exc).strip()}; {human_size(free)} free on "
        f"{nearest_existing(output.parent)}'s filesystem, likely full); nothing was written; "
        "free space or pass --output on another filesystem"
    )


def _move_into_place(stage: Path, output: Path) -> None:
    """Renames ``stage`` to ``output``; an existing ``output`` is moved aside first and restored on failure."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.exists():
        os.replace(stage, output)
        return
    trash = Path(tempfile.mkdtemp(prefix=_stage_prefix(output, "old"), dir=output.parent))
    try:
        os.replace(output, trash / "old")
        try:
            os.replace(stage, output)
        except OSError:
            os.replace(trash / "old", output)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def publish(temp: Path, final: Path) -> None:
    """Moves a finished temp file onto ``final``, flushed to disk and with ordinary permissions (mkstemp makes it
    owner-only)."""
    with temp.open("rb") as stream:
        os.fsync(stream.fileno())
    umask = os.umask(0)
    os.umask(umask)
    temp.chmod(0o666 & ~umask)
    os.replace(temp, final)


@contextlib.contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` (same suffix) to write; it becomes ``path`` when the block ends without error
    and is removed otherwise, so ``path`` is never seen half-written."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        publish(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


GENERATED_KEYS = ("format", "created", "versions", "files")  # what write_manifest adds to a body


def write_manifest(
    directory: Path, body: Mapping[str, Any], files: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Writes ``manifest.json``: ``body`` plus versions, time and the sha256/size of every other file.

    Returns the manifest as written. A ``body`` that is an earlier manifest has its generated keys renewed.
    ``files`` replaces the hashing of the directory with given entries: a manifest that adds files to an
    artifact keeps the entries recorded at export, so a file corrupted since still fails ``verify``.
    """
    if files is None:
        files = {
            path.relative_to(directory).as_posix(): {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
        }
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{key: value for key, value in body.items() if key not in GENERATED_KEYS},
        "versions": library_versions(),
        "files": {name: dict(files[name]) for name in sorted(files)},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@dataclasses.dataclass(frozen=True)
class Verified:
    """An artifact directory that matched its manifest."""

    directory: Path
    files: int
    bytes: int
    full: bool
    manifest: dict[str, Any]

    def describe(self) -> str:
        how = "sizes and sha256" if self.full else "sizes (without --sizes-only, verify checks sha256 too)"
        return f"ok: {self.directory} matches its manifest: {self.files} files, {self.bytes} bytes; checked {how}"


def verify_artifact(directory: Path, full: bool = False, sha256: Collection[str] = ()) -> Verified:
    """Checks an artifact directory against its manifest before anything uses it (after a copy between machines).

    Every listed file must be present with the listed size, and with ``full`` the listed sha256 (without it, only
    the files named in ``sha256``: those a caller reads, such as the graph ``build-engine`` builds from); the
    manifest's format must be one this version reads. Each file is hashed at most once. Raises
    :class:`ArtifactError` with one line naming the first bad file (and how many more there are); the manifest
    read here is returned in :attr:`Verified.manifest`, so callers need not read it again.
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{directory / MANIFEST} lists no files; re-export the artifact")
    problems = [
        p for name, entry in files.items() if (p := _file_problem(directory, name, entry, full or name in sha256))
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"{problems[0]}{more}; copy the artifact directory again, or re-export it")
    total = sum(int(entry["bytes"]) for entry in files.values())
    return Verified(directory, len(files), total, full, manifest)


def load_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of an artifact directory; a missing directory or manifest, one that is not JSON, or a format
    this version does not read is one :class:`ArtifactError` line (exit 8), whichever command asked."""
    directory = Path(directory)
    if not directory.is_dir():
        what = " is a file, not a directory" if directory.exists() else ": no such directory"
        raise ArtifactError(f"{directory}{what}; pass the directory hiprune-export wrote")
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: not a hiprune-export artifact, or an incomplete copy")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{path} cannot be read ({exc}); copy the artifact directory again") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt not in KNOWN_FORMATS:
        raise ArtifactError(
            f"{path} has format {fmt!r}; this version reads {', '.join(KNOWN_FORMATS)}; "
            "re-export the artifact or use the hiprune-export that wrote it"
        )
    return manifest


def _file_problem(directory: Path, name: str, entry: Any, full: bool) -> str | None:
    path = directory / name
    if Path(name).is_absolute() or ".." in Path(name).parts or not isinstance(entry, dict):
        return f"{directory / MANIFEST} lists {name!r}, which is not a file inside the artifact"
    if not path.is_file():
        return f"{path} is missing"
    size, want = path.stat().st_size, int(entry.get("bytes", -1))
    if size < want:
        return f"{path} is truncated: {size} of {want} bytes"
    if size != want:
        return f"{path} has {size} bytes; the manifest says {want}"
    if full and sha256_file(path) != entry.get("sha256"):
        return f"{path} is corrupt: its sha256 differs from the manifest's"
    return None
