"""The exception family: one root, a few named kinds, each mapped to an exit code by the CLI.

Exit codes (the CLI's and the README's table): 0 success; 1 an unexpected error (a bug: rerun with --verbose for
the traceback); 2 a setting or option; 3 the checkpoint; 4 the output path (exists, not writable, read-only or full
filesystem); 5 the export or its post-export check; 6 an optional backend missing here; 7 not enough memory;
8 an artifact directory that is missing, has no readable manifest, or does not match it; 130 interrupted.
"""

from __future__ import annotations

EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error (a bug; --verbose shows the traceback)",
    2: "a setting or option is invalid, or does not apply",
    3: "the checkpoint is missing, unsupported or unreadable",
    4: "the output path cannot be used (exists, not writable, read-only or full filesystem)",
    5: "the export or its post-export check failed",
    6: "an optional backend (TensorRT, Core ML) is not available here",
    7: "the export would need more memory than is available",
    8: "an artifact is missing, has no readable manifest, or does not match it (missing, truncated, corrupt file)",
    130: "interrupted (nothing written)",
}


class HiPruneError(Exception):
    """Root of every error this package raises on purpose.

    The message is one line that says what is wrong, what was expected and how to fix it;
    the CLI prints it as it is, without a traceback.
    """

    exit_code = 1


class ConfigError(HiPruneError, ValueError):
    """A HiPrune or export setting is out of its allowed range."""

    exit_code = 2


class CheckpointError(HiPruneError):
    """The checkpoint is missing, unsupported, or its weights cannot be read."""

    exit_code = 3


class OutputError(HiPruneError):
    """The output path cannot take the artifact: not writable, on a read-only or full filesystem, or unsafe."""

    exit_code = 4


class OutputExistsError(OutputError):
    """The output directory exists and is not empty, and overwriting was not asked for."""


class ExportError(HiPruneError):
    """Tracing, conversion or the post-export check of an artifact failed."""

    exit_code = 5


class BackendUnavailableError(HiPruneError):
    """An optional backend (TensorRT, Core ML, ...) is not installed or cannot run on this machine."""

    exit_code = 6


class ResourceError(HiPruneError):
    """The export (or its check) would need more memory than this machine has available."""

    exit_code = 7


class ArtifactError(HiPruneError):
    """An artifact directory is missing or does not match its manifest: a file missing, truncated or changed, or
    the manifest itself missing, not JSON or of an unknown format (whichever command reads it)."""

    exit_code = 8


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name where the message is empty (``AssertionError()``)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else type(exc).__name__


def typed_line(exc: BaseException) -> str:
    """``Type: first line`` of an error no one-line kind describes (just ``Type`` where the message is empty)."""
    line = one_line(exc)
    return line if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"


def innermost(exc: BaseException) -> BaseException:
    """The root cause of ``exc``: onnx-ir's ``PassError`` wraps a pass's own error once or twice."""
    seen = {id(exc)}
    while (cause := exc.__cause__ or exc.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        exc = cause
    return exc


def as_hiprune_error(exc: BaseException, doing: str) -> HiPruneError:
    """One of ours for any exception escaping ``doing``: a HiPruneError found anywhere in the cause chain is
    returned as it is; anything else becomes an :class:`ExportError` (``MemoryError``: :class:`ResourceError`)
    with the root cause's first line."""
    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        if isinstance(link, HiPruneError):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    root = innermost(exc)
    if isinstance(exc, MemoryError) or isinstance(root, MemoryError):
        return ResourceError(f"{doing} ran out of memory; lower --batch or free memory and rerun")
    kind = type(root).__name__
    text = one_line(root)
    detail = text if text == kind else f"{kind}: {text}"
    return ExportError(f"{doing} failed: {detail}; rerun with --verbose for the traceback")
