"""Runners over artifacts: a context manager with ``infer()`` that checks its feed, then calls ``infer_impl``.

Given the artifact's :class:`~hiprune.contract.IOContract`, ``infer()`` also checks the outputs' names, shapes
and dtypes. Heavy backends are imported inside the runner that needs them; ORT is the CPU reference.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hiprune.contract import IOContract
from hiprune.errors import HiPruneError


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


CROPS_HINT = " (the base view + the tiles of one grid pinpoint; export another pinpoint with --resolution)"


class BaseRunner(abc.ABC):
    """Activate with ``with``; ``infer`` validates names, shapes and dtypes before running."""

    name: ClassVar[str]

    def __init__(self, contract: IOContract | None = None) -> None:
        self.active = False
        self.contract = contract
        self.last_inference_s: float | None = None
        self.note: str | None = None  # set when a faster path had to fall back (shown by hiprune-run, kept in JSON)

    def __enter__(self) -> BaseRunner:
        self.activate_impl()
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate_impl()
        self.active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise HiPruneError(f"{self.name} runner is not active; use it as `with runner: runner.infer(...)`")
        for spec in self.input_specs():
            if spec.name not in feed:
                raise HiPruneError(
                    f"input {spec.name!r} missing from the feed; expected {[s.name for s in self.input_specs()]}"
                )
            value = feed[spec.name]
            if tuple(value.shape) != spec.shape or value.dtype != spec.dtype:
                raise HiPruneError(
                    f"input {spec.name!r} is {value.dtype}{list(value.shape)}; "
                    f"the artifact takes {spec.dtype}{list(spec.shape)}" + (CROPS_HINT if len(spec.shape) == 5 else "")
                )
        start = time.perf_counter()
        out = self.infer_impl(feed)
        self.last_inference_s = time.perf_counter() - start
        if self.contract is not None:
            self._check_outputs(out, self.contract)
        return out

    def _check_outputs(self, out: dict[str, np.ndarray], contract: IOContract) -> None:
        for info in contract.outputs:
            value = out.get(info.name)
            if value is None or tuple(value.shape) != info.shape or value.dtype != np.dtype(info.dtype):
                got = "missing" if value is None else f"{value.dtype}{list(value.shape)}"
                raise HiPruneError(
                    f"{self.name} output {info.name!r} is {got}; the contract says {info.dtype}{list(info.shape)}"
                )

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...

    @abc.abstractmethod
    def input_specs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int32)": np.dtype(np.int32),
}


class OrtRunner(BaseRunner):
    """ONNX Runtime over a ``model.onnx`` (CPU by default; pass providers for others)."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        intra_op_threads: int | None = None,
        contract: IOContract | None = None,
    ) -> None:
        super().__init__(contract)
        self.model_path = Path(model_path)
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.session: Any = None

    def activate_impl(self) -> None:
        from hiprune.runtime.ort_session import open_session

        self.session = open_session(self.model_path, list(self.providers), self.intra_op_threads)

    def deactivate_impl(self) -> None:
        self.session = None

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(i.name, tuple(i.shape), _ORT_DTYPES[i.type]) for i in self.session.get_inputs()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed), strict=True))
