"""A CPU stand-in for a CUDA graph's capture and replay, so the runtime's capture logic runs where no GPU is.

What it keeps of CUDA's semantics: capture records the tensor ops a function dispatches and runs none of them for
good (every tensor that existed before is restored, every tensor made during capture holds garbage); ``replay``
reruns the recorded ops in order over the same tensors, writing into the captured outputs, with every Python
decision and scalar fixed as it was at capture. Reading a tensor on the host fails the capture, as it does on a
GPU: an op that does (``_local_scalar_dense``, ``nonzero``, ...), and the Tensor methods that copy to the host
(``item``, ``tolist``, ``numpy``, ``cpu``, ``__array__``), which on a CPU tensor dispatch no op to record. Python
code that the function runs only at capture time therefore has no effect on a replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
HOST_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.nonzero.default}
HOST_COPIES = ("item", "tolist", "numpy", "cpu", "__array__")  # Tensor methods that dispatch nothing on a CPU tensor


@contextlib.contextmanager
def _no_host_copies() -> Iterator[None]:
    """While a graph is captured, the :data:`HOST_COPIES` methods raise (a GPU's capture refuses a device-to-host
    copy; on the CPU they would pass unseen by the recorder)."""

    def refusal(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"Tensor.{name}() reads a tensor on the host: not permitted while a graph is captured")

        return refuse

    with contextlib.ExitStack() as stack:
        for name in HOST_COPIES:
            stack.enter_context(mock.patch.object(torch.Tensor, name, refusal(name)))
        yield


def _written(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors ``func`` writes in place (``Tensor(a!)`` arguments)."""
    out = []
    for index, argument in enumerate(func._schema.arguments):
        value = args[index] if index < len(args) else kwargs.get(argument.name)
        if argument.alias_info is not None and argument.alias_info.is_write and isinstance(value, torch.Tensor):
            out.append(value)
    return out


def _fresh_outputs(func: Any, result: Any) -> list[torch.Tensor | None]:
    """The op's returned tensors that are new (not views of, or the same as, an argument); ``None`` elsewhere."""
    values = list(result) if isinstance(result, (tuple, list)) else [result]
    returns = func._schema.returns
    aliased = [r.alias_info is not None for r in returns] if len(returns) == len(values) else [False] * len(values)
    return [v if isinstance(v, torch.Tensor) and not a else None for v, a in zip(values, aliased, strict=True)]


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[Any, tuple, dict, list[torch.Tensor | None]]] = []
        self.snapshots: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fresh: list[torch.Tensor] = []
        self._fresh_storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_READS:
            raise RuntimeError(f"{func} reads a tensor on the host: not permitted while a graph is captured")
        for tensor in _written(func, args, kwargs):
            if tensor.untyped_storage().data_ptr() not in self._fresh_storages:
                self.snapshots.append((tensor, tensor.clone()))
        result = func(*args, **kwargs)
        outs = _fresh_outputs(func, result)
        for tensor in outs:
            if tensor is not None:
                self.fresh.append(tensor)
                self._fresh_storages.add(tensor.untyped_storage().data_ptr())
        self.ops.append((func, args, kwargs, outs))
        return result

    def undo(self) -> None:
        """What a capture leaves: the earlier tensors as they were, the new ones uninitialised."""
        for tensor, snapshot in reversed(self.snapshots):
            tensor.copy_(snapshot)
        for tensor in self.fresh:
            tensor.fill_(float("nan") if tensor.is_floating_point() else (True if tensor.dtype == torch.bool else 7))


class RecordedGraph:
    """Same interface as the runtime's ``_Graph``: ``fn(*inputs)`` warmed up, captured, replayed over ``inputs``."""

    def __init__(self, fn: Callable[..., Any], inputs: tuple[Any, ...], warmup: int = 2) -> None:
        self.inputs = inputs
        with torch.no_grad():
            for _ in range(warmup):
                fn(*inputs)
            recorder = _Recorder()
            with recorder, _no_host_copies():
                self.output = fn(*inputs)
        recorder.undo()
        self.ops = recorder.ops

    def replay(self) -> Any:
        with torch.no_grad():
            for func, args, kwargs, outs in self.ops:
                for target, value in zip(outs, _fresh_outputs(func, func(*args, **kwargs)), strict=True):
                    if target is not None:
                        target.copy_(value)
        return self.output
