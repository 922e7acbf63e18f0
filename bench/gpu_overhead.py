"""GPU cost of pruning in the PyTorch module: pruned (K = 64) vs unpruned, eager and under CUDA graphs, and the
selection op alone (current form vs the previous sort-based one) with its CUDA kernel count. Prints JSON.

    python bench/gpu_overhead.py [--runs 200] [--dtype fp16] [--batch 1]

Needs a CUDA GPU; about 2-4 minutes on an H100/H200 (the default CLIP-L/336 + 4096-d projector, random weights).
Goals (from the selection's design): pruned / unpruned <= 1.03 under CUDA graphs and <= 1.10 eager. Timings are
medians of interleaved runs measured with CUDA events; every ratio comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from select_ops import sort_based_select  # noqa: E402  (the previous form, kept verbatim in the CPU bench)

from hiprune.config import HiPruneConfig, anchor_count  # noqa: E402
from hiprune.export.models import load_encoder  # noqa: E402
from hiprune.selection import select_static  # noqa: E402


def timed_ms(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def graphed(fn):
    """``fn`` captured once in a CUDA graph (after warm-up on a side stream); returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def interleaved(fns: dict, runs: int) -> dict[str, float]:
    """Median ms of each callable, runs alternating between them after a warm-up."""
    for fn in fns.values():
        timed_ms(fn, 10)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            samples[name] += timed_ms(fn, 1)
    return {name: round(statistics.median(values), 4) for name, values in samples.items()}


def kernels(fn) -> dict:
    """CUDA kernels one call launches (torch.profiler), and how many of them sort."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    sorts = [n for n in names if "sort" in n.lower() or "radix" in n.lower()]
    copies = [n for n in names if "memcpy" in n.lower()]
    return {"kernels": len(names), "sort_kernels": len(sorts), "copies": len(copies)}


def module_costs(dtype: torch.dtype, batch: int, runs: int) -> dict:
    """The default model pruned (K = 64) and unpruned, eager and graphed."""
    pruned = load_encoder(None, HiPruneConfig(keep=64)).encoder.to("cuda", dtype).eval()
    full = load_encoder(None, HiPruneConfig(keep=64, prune=False)).encoder.to("cuda", dtype).eval()
    x = torch.randn(batch, 3, *pruned.input_size, device="cuda", dtype=dtype)
    eager = interleaved({"pruned": lambda: pruned(x), "full": lambda: full(x)}, runs)
    graphs = interleaved({"pruned": graphed(lambda: pruned(x)), "full": graphed(lambda: full(x))}, runs)
    return {
        "module_ms": {"eager": eager, "cuda_graphs": graphs},
        "ratio_pruned_over_full": {
            "eager": round(eager["pruned"] / eager["full"], 4),
            "cuda_graphs": round(graphs["pruned"] / graphs["full"], 4),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: bench/gpu_overhead.py needs a CUDA GPU; bench/select_ops.py counts ops on CPU")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    result: dict = {"device": torch.cuda.get_device_name(), "dtype": args.dtype, "batch": args.batch}
    with torch.inference_mode():
        result.update(module_costs(dtype, args.batch, args.runs))
        torch.cuda.empty_cache()
        s_obj, s_deep = (torch.rand(args.batch, 576, device="cuda") for _ in range(2))
        call = (s_obj, s_deep, 64, anchor_count(64, 0.1), 24, False)
        assert torch.equal(select_static(*call), sort_based_select(*call))
        forms = {"current": lambda: select_static(*call), "sort_based": lambda: sort_based_select(*call)}
        result["select_ms"] = {
            "eager": interleaved(forms, args.runs),
            "cuda_graphs": interleaved({k: graphed(f) for k, f in forms.items()}, args.runs),
        }
        result["select_kernels"] = {name: kernels(fn) for name, fn in forms.items()}
    result["goals"] = {"cuda_graphs": 1.03, "eager": 1.10}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
