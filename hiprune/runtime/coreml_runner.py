"""A runner over ``model.mlpackage`` (Core ML predictions; macOS only). Imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hiprune.backends import coreml_predict_missing
from hiprune.contract import IOContract
from hiprune.errors import BackendUnavailableError
from hiprune.runtime.runners import BaseRunner, TensorSpec

METADATA_COMPUTE_UNITS = "hiprune.compute_units"


def compute_unit(name: str) -> Any:
    """``ct.ComputeUnit`` for a ``--compute-units`` value (the values are declared in hiprune.targets.options)."""
    import coremltools as ct

    return getattr(ct.ComputeUnit, name.upper())


class CoreMLRunner(BaseRunner):
    """Loads the package with its recorded compute units (or ``compute_units``) and calls ``predict``."""

    name: ClassVar[str] = "coreml"

    def __init__(self, package: Path, compute_units: str | None = None, contract: IOContract | None = None) -> None:
        super().__init__(contract)
        self.package = Path(package)
        self.compute_units = compute_units
        self._model: Any = None

    def activate_impl(self) -> None:
        if (missing := coreml_predict_missing()) is not None:
            raise BackendUnavailableError(f"cannot run {self.package}: {missing}")
        import coremltools as ct

        spec_only = ct.models.MLModel(str(self.package), skip_model_load=True)
        units = self.compute_units or spec_only.user_defined_metadata.get(METADATA_COMPUTE_UNITS, "all")
        self._model = ct.models.MLModel(str(self.package), compute_units=compute_unit(units))

    def deactivate_impl(self) -> None:
        self._model = None

    def input_specs(self) -> list[TensorSpec]:
        specs = []
        for item in self._model.get_spec().description.input:
            array = item.type.multiArrayType
            specs.append(TensorSpec(item.name, tuple(int(d) for d in array.shape), np.dtype(np.float32)))
        return specs

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in self._model.predict(feed).items()}
