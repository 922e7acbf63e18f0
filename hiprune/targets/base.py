"""The target interface: one module per target, registered by name in :data:`hiprune.targets.TARGETS`."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from hiprune.errors import ConfigError
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
    output_dtypes: dict[str, str] | None = None  # where the artifact's outputs are not float32 / int64
    comparison_label: str = "check vs PyTorch"


@dataclasses.dataclass(frozen=True)
class TargetOption:
    """A target-specific CLI option (``--precision``, ``--device``, ...): allowed values and the default."""

    choices: tuple[str, ...]
    default: str


class Target(abc.ABC):
    """A deployment target: set ``name`` (and ``options`` if any) and implement :meth:`build`."""

    name: ClassVar[str]
    options: ClassVar[dict[str, TargetOption]] = {}

    def __init__(self, given: Mapping[str, str] | None = None) -> None:
        self.settings = self._resolve(dict(given or {}))

    @classmethod
    def _resolve(cls, given: dict[str, str]) -> dict[str, str]:
        for key, value in given.items():
            flag = "--" + key.replace("_", "-")
            if key not in cls.options:
                owners = sorted(t for t, keys in OPTION_OWNERS.items() if key in keys)
                raise ConfigError(f"{flag} does not apply to --target {cls.name}; it applies to: {', '.join(owners)}")
            if value not in cls.options[key].choices:
                allowed = ", ".join(cls.options[key].choices)
                raise ConfigError(f"{flag} {value!r} is not available for --target {cls.name}; use one of: {allowed}")
        return {key: given.get(key, option.default) for key, option in cls.options.items()}

    def check_available(self) -> None:  # noqa: B027  (optional hook; most targets run anywhere)
        """Raises :class:`~hiprune.errors.BackendUnavailableError` when these settings cannot run here."""

    @abc.abstractmethod
    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        """Writes the artifact into ``stage`` (an empty directory), checks it, and says what it wrote."""


# target name → the option keys it takes (filled by each target module's registration; for error messages)
OPTION_OWNERS: dict[str, tuple[str, ...]] = {}
