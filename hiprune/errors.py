"""The exception family: one root, a few named kinds, each mapped to an exit code by the CLI."""

from __future__ import annotations


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


class OutputExistsError(HiPruneError):
    """The output directory exists and is not empty, and overwriting was not asked for."""

    exit_code = 4


class ExportError(HiPruneError):
    """Tracing, conversion or the post-export check of an artifact failed."""

    exit_code = 5


class BackendUnavailableError(HiPruneError):
    """An optional backend (TensorRT, Core ML, ...) is not installed or cannot run on this machine."""

    exit_code = 6
