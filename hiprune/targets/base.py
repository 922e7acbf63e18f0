"""The target interface: one module per target, registered by name in :data:`hiprune.targets.TARGETS`."""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from hiprune.export.models import LoadedEncoder
from hiprune.progress import Steps
from hiprune.runtime.compare import Comparison


@dataclasses.dataclass(frozen=True)
class BuildJob:
    """What a target gets: the built encoder, the static batch, provenance metadata, and a progress reporter."""

    loaded: LoadedEncoder
    batch: int
    metadata: dict[str, str]
    steps: Steps


@dataclasses.dataclass(frozen=True)
class BuildOutput:
    """What a target wrote: its main artifact (relative to the staging dir) and details for the manifest."""

    artifact: str
    details: dict[str, Any]
    comparison: Comparison | None = None
    note: str | None = None


class Target(abc.ABC):
    """A deployment target. Subclasses set ``name`` and implement :meth:`build`; :meth:`missing` is optional."""

    name: ClassVar[str]

    @classmethod
    def missing(cls) -> str | None:
        """What this target lacks on this machine (a one-line reason), or ``None`` when it can run."""
        return None

    @abc.abstractmethod
    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        """Writes the artifact into ``stage`` (an empty directory), checks it, and says what it wrote."""
