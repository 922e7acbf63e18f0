"""Every ONNX Runtime session the product opens, made in one place.

A chain holds two sessions in one process when the encoder artifact and the language model both run on ONNX
Runtime. By default each session owns an intra-op thread pool with one worker per physical core. ONNX Runtime can
instead give every session of a process one **global thread pool**, which it recommends where sessions contend
for cores. It is process-wide and, once made, refuses any later session that asks for a pool of its own, so here
it is opt-in (:func:`share_cpu_threads`; ``bench/ttft_cpu.py --ort-threads shared``). On the 2-core CPU machine
the chain's TTFT with the two pools shared was not measurably different from separate pools (README,
*Benchmarks*), so the console scripts keep ONNX Runtime's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_shared_wanted = False  # share_cpu_threads() was called: the next session creates the global pool
_shared_made = False  # this process's ONNX Runtime environment has the global pool


def share_cpu_threads() -> None:
    """Makes every ONNX Runtime session this process opens from now on share one intra-op thread pool.

    Cheap and import-free (``--help`` stays fast): the pool is made with the first session. Sessions opened
    before the call keep their own pools.
    """
    global _shared_wanted
    _shared_wanted = True


def threads_shared() -> bool:
    """Whether sessions opened now share the process-wide pool."""
    return _shared_wanted


def session_options(intra_op_threads: int | None = None) -> Any:
    """Session options with full graph optimisation, on the shared pool when this process has one.

    Args:
        intra_op_threads: threads for a session's own pool (``None``: one per physical core). Ignored on the
            shared pool, whose size is ONNX Runtime's default (one per physical core).
    """
    global _shared_made
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if _shared_wanted and not _shared_made:
        ort.set_global_thread_pool_sizes(0, 1)  # intra: one per physical core (default); inter: unused (sequential)
        _shared_made = True
    if _shared_made:
        options.use_per_session_threads = False
    elif intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    return options


def open_session(path: Path, providers: list[str], intra_op_threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` over ``path`` with :func:`session_options`."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(intra_op_threads), providers=providers)
