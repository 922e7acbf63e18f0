"""A runner over a serialized TensorRT engine (``model.engine``), thin over Polygraphy's ``TrtRunner``.

Imported lazily: nothing here loads TensorRT until a runner is activated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hiprune.backends import tensorrt_missing
from hiprune.contract import IOContract
from hiprune.errors import BackendUnavailableError
from hiprune.runtime.runners import BaseRunner, TensorSpec


class TrtEngineRunner(BaseRunner):
    """Loads the engine, allocates bindings (Polygraphy), runs it; ``last_inference_s`` times each call."""

    name: ClassVar[str] = "tensorrt"

    def __init__(self, engine_path: Path, contract: IOContract | None = None) -> None:
        super().__init__(contract)
        self.engine_path = Path(engine_path)
        self._runner: Any = None

    def activate_impl(self) -> None:
        if (missing := tensorrt_missing()) is not None:
            raise BackendUnavailableError(f"cannot run {self.engine_path}: {missing}")
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.engine_path))))
        self._runner.activate()

    def deactivate_impl(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
        self._runner = None

    def input_specs(self) -> list[TensorSpec]:
        meta = self._runner.get_input_metadata()
        return [TensorSpec(name, tuple(int(d) for d in m.shape), np.dtype(m.dtype)) for name, m in meta.items()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._runner.infer(feed, copy_outputs_to_host=True)
        return {name: np.asarray(value) for name, value in outputs.items()}
