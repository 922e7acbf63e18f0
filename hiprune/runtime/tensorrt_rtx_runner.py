"""A runner over a TensorRT-RTX engine (``--device rtx``): TensorRT-RTX's runtime, torch CUDA tensors as buffers.

TensorRT-RTX engines are built ahead of time for a set of compute capabilities and specialise on first run;
its runtime accepts RTX-class GPUs (compute capability 8.0-8.9 and 12.x) and refuses others (Hopper among
them). Imported lazily: nothing here loads TensorRT-RTX or torch until the runner is activated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hiprune.backends import tensorrt_rtx_runtime_missing
from hiprune.contract import IOContract
from hiprune.errors import BackendUnavailableError
from hiprune.runtime.runners import BaseRunner, TensorSpec


class TrtRtxEngineRunner(BaseRunner):
    """Deserializes the engine, binds one device buffer per I/O tensor, runs ``execute_async_v3`` on a stream."""

    name: ClassVar[str] = "tensorrt-rtx"

    def __init__(self, engine_path: Path, contract: IOContract | None = None) -> None:
        super().__init__(contract)
        self.engine_path = Path(engine_path)
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._buffers: dict[str, Any] = {}
        self._inputs: set[str] = set()  # names of the engine's input tensors, read once at activation

    def activate_impl(self) -> None:
        if (missing := tensorrt_rtx_runtime_missing()) is not None:
            raise BackendUnavailableError(f"cannot run {self.engine_path}: {missing}")
        import tensorrt_rtx as trt
        import torch

        from hiprune.runtime.tensorrt_build import capturing_logger

        logger = capturing_logger(trt)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise BackendUnavailableError(f"TensorRT-RTX cannot load {self.engine_path}: {'; '.join(logger.errors)}")
        self._context = self._engine.create_execution_context()
        for position in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(position)
            dtype = _torch_dtype(torch, trt, self._engine.get_tensor_dtype(name))
            shape = tuple(self._engine.get_tensor_shape(name))
            self._buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self._context.set_tensor_address(name, self._buffers[name].data_ptr())
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.add(name)

    def deactivate_impl(self) -> None:
        self._buffers.clear()
        self._inputs.clear()
        self._context = self._engine = self._runtime = None

    def input_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(name, tuple(buffer.shape), np.dtype(str(buffer.dtype).removeprefix("torch.")))
            for name, buffer in self._buffers.items()
            if name in self._inputs
        ]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        for name, value in feed.items():
            self._buffers[name].copy_(torch.from_numpy(value))
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT-RTX failed to run {self.engine_path}")
        stream.synchronize()
        return {name: buffer.cpu().numpy() for name, buffer in self._buffers.items() if name not in self._inputs}


def _torch_dtype(torch: Any, trt: Any, dtype: Any) -> Any:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64, trt.int32: torch.int32}
    return table[dtype]
