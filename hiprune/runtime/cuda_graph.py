"""One CUDA-graph capture for the runtime's fast paths (the language model's prefill and decode steps, the
PyTorch encoder): warm-up on a side stream, capture once, replay over the same input and output tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hiprune.errors import one_line

WARMUP_RUNS = 2


class CudaGraph:
    """``fn(*inputs)`` warmed up on a side stream, captured once, replayed over the same input buffers.

    Copy new values into :attr:`inputs` before :meth:`replay`; its result is the tensors captured as the output,
    overwritten by every replay. Python code in ``fn`` runs at capture only: a replay repeats its tensor work.
    """

    def __init__(self, fn: Callable[..., Any], inputs: tuple[Any, ...], warmup: int = WARMUP_RUNS) -> None:
        import torch

        self.inputs = inputs
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):
                fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.output = fn(*inputs)

    def replay(self) -> Any:
        self.graph.replay()
        return self.output


def capture_failure(exc: BaseException, what: str) -> str:
    """The note a runtime keeps when capture failed and it runs eager instead."""
    return f"{what} CUDA graph capture failed ({one_line(exc)}); running eager"
