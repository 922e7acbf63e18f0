"""The target interface: one module per target, registered by name in :data:`hiprune.targets.TARGETS`.

Light on purpose: the CLI imports this package to list targets and options, so nothing here imports torch.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hiprune.contract import IOContract
from hiprune.targets.options import OptionChoices, resolve_options, target_options

if TYPE_CHECKING:
    import numpy as np

    from hiprune.export.encoder import PrunedEncoder
    from hiprune.progress import Steps
    from hiprune.runtime.compare import Comparison


@dataclasses.dataclass(frozen=True)
class BuildJob:
    """What a target gets: the module to export, the I/O contract it must keep, provenance, and progress.

    Attributes:
        encoder: the traceable PyTorch module (pixel_values → image_embeds, indices).
        io: names, static shapes and dtypes of the module's input and outputs.
        source: one-line description of the checkpoint, for artifact descriptions.
        metadata: provenance strings written into the artifact.
        steps: the progress reporter.
    """

    encoder: PrunedEncoder
    io: IOContract
    source: str
    metadata: dict[str, str]
    steps: Steps

    @functools.cached_property
    def reference(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The check input and the PyTorch module's outputs on it, computed once per job (every check reuses them)."""
        from hiprune.targets.spine import compute_reference

        return compute_reference(self)

    @property
    def batch(self) -> int:
        return self.io.batch


@dataclasses.dataclass(frozen=True)
class BuildOutput:
    """What a target wrote: its main artifact (relative to the staging dir) and details for the manifest.

    ``io`` is the artifact's own contract where it differs from the job's (Core ML's output dtypes).
    """

    artifact: str
    details: dict[str, Any]
    comparison: Comparison | None = None
    note: str | None = None
    io: IOContract | None = None
    comparison_label: str = "check vs PyTorch"


class Target(abc.ABC):
    """A deployment target: set ``name`` and implement :meth:`build`; its options are declared in
    :mod:`hiprune.targets.options`, not here, so the CLI reads them without importing the target."""

    name: ClassVar[str]

    def __init__(self, given: Mapping[str, str] | None = None) -> None:
        self.settings = resolve_options(self.name, dict(given or {}))

    @classmethod
    def options(cls) -> dict[str, OptionChoices]:
        """This target's options and their allowed values (from the declaration)."""
        return target_options(cls.name)

    def check_available(self) -> None:  # noqa: B027  (optional hook; most targets run anywhere)
        """Raises :class:`~hiprune.errors.BackendUnavailableError` when these settings cannot run here."""

    @abc.abstractmethod
    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        """Writes the artifact into ``stage`` (an empty directory), checks it, and says what it wrote."""
