"""GPU cost of pruning in the PyTorch module: pruned (K = 64) vs unpruned, eager and under CUDA graphs, and the
selection op alone (current form vs the previous sort-based one) with its CUDA kernel count. Prints JSON.

    python bench/gpu_overhead.py [--runs 200] [--dtype fp16] [--batch 1] [--json PATH]

Needs a CUDA GPU; about 1-2 minutes on an H100/H200 (the default CLIP-L/336 + 4096-d projector, random weights).
Goals (from the selection's design): pruned / unpruned <= 1.03 under CUDA graphs and <= 1.10 eager. Timings are
medians of interleaved runs measured with CUDA events; every ratio comes from this one run. Each section's
result is printed to stderr (and ``--json`` rewritten) as soon as it is measured, so a timeout keeps the numbers.
``--device cpu --model DIR --keep K --dtype fp32`` runs the same plumbing on a tiny checkpoint (wall-clock
timers, no graphs, no kernel counts): a smoke run, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from select_ops import sort_based_select  # noqa: E402  (the previous form, kept verbatim in the CPU bench)

from hiprune.config import HiPruneConfig, anchor_count  # noqa: E402
from hiprune.errors import typed_line  # noqa: E402
from hiprune.export.models import load_encoder  # noqa: E402
from hiprune.selection import select_static  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def timed_ms(fn, runs: int, device: str) -> list[float]:
    """Per-call milliseconds: CUDA events on the GPU, the wall clock on the CPU."""
    times = []
    for _ in range(runs):
        if device != "cuda":
            start_s = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - start_s))
            continue
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


def interleaved(fns: dict, runs: int, device: str) -> dict[str, float]:
    """Median ms of each callable, runs alternating between them after a warm-up."""
    for fn in fns.values():
        timed_ms(fn, min(10, runs), device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            samples[name] += timed_ms(fn, 1, device)
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


def module_costs(args: argparse.Namespace, dtype: torch.dtype, result: dict) -> None:
    """The model pruned (K = ``keep``) and unpruned, eager and (on CUDA) graphed; the eager numbers are emitted
    before the graphs are captured, and a capture that fails is recorded as one line, so the run goes on."""
    device, runs = args.device, args.runs
    pruned = load_encoder(args.model, HiPruneConfig(keep=args.keep)).encoder.to(device, dtype).eval()
    full = load_encoder(args.model, HiPruneConfig(prune=False)).encoder.to(device, dtype).eval()
    x = torch.randn(args.batch, *pruned.input_shape, device=device, dtype=dtype)
    ms = {"eager": interleaved({"pruned": lambda: pruned(x), "full": lambda: full(x)}, runs, device)}
    emit(result, args.json, "module_eager", _module_part(ms))
    if device == "cuda":
        try:
            ms["cuda_graphs"] = interleaved(
                {"pruned": graphed(lambda: pruned(x)), "full": graphed(lambda: full(x))}, runs, device
            )
        except Exception as exc:  # keep the eager numbers and still measure the selection op
            emit(result, args.json, "module_cuda_graphs", {"module_cuda_graphs_error": typed_line(exc)})
            return
        emit(result, args.json, "module_cuda_graphs", _module_part(ms))


def _module_part(ms: dict[str, dict[str, float]]) -> dict:
    ratios = {mode: round(times["pruned"] / times["full"], 4) for mode, times in ms.items()}
    return {"module_ms": dict(ms), "ratio_pruned_over_full": ratios}


def select_costs(args: argparse.Namespace) -> dict:
    """The selection op alone at the default shapes (576 scores, K = 64), both forms, and their kernel counts."""
    device, runs = args.device, args.runs
    s_obj, s_deep = (torch.rand(args.batch, 576, device=device) for _ in range(2))
    call = (s_obj, s_deep, 64, anchor_count(64, 0.1), 24, False)
    if not torch.equal(select_static(*call), sort_based_select(*call)):
        raise SystemExit("error: the current selection and the sort-based one disagree on this device")
    forms = {"current": lambda: select_static(*call), "sort_based": lambda: sort_based_select(*call)}
    result = {"select_ms": {"eager": interleaved(forms, runs, device)}}
    if device == "cuda":
        try:
            result["select_ms"]["cuda_graphs"] = interleaved({k: graphed(f) for k, f in forms.items()}, runs, device)
        except Exception as exc:
            result["select_cuda_graphs_error"] = typed_line(exc)
        result["select_kernels"] = {name: kernels(fn) for name, fn in forms.items()}
    return result


def emit(result: dict, path: Path | None, section: str, part: dict) -> None:
    """One section's numbers to stderr at once, and the whole result so far to ``path`` (a timeout keeps them)."""
    result.update(part)
    print(f"{section}: {json.dumps(part)}", file=sys.stderr, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--keep", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here, section by section")
    parser.add_argument("--model", default=None, help="a checkpoint directory (smoke runs); default: LLaVA-1.5-7B")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: smoke runs only")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: bench/gpu_overhead.py needs a CUDA GPU (torch.cuda.is_available() is False); "
                 "bench/select_ops.py counts ops on CPU")  # fmt: skip
    if args.runs < 1 or args.batch < 1:
        sys.exit(f"error: --runs {args.runs} and --batch {args.batch} must be at least 1")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke run)"
    result: dict = {"device": name, "dtype": args.dtype, "batch": args.batch, "torch": torch.__version__}
    with torch.inference_mode():
        module_costs(args, DTYPES[args.dtype], result)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        emit(result, args.json, "select", {**select_costs(args), "goals": {"cuda_graphs": 1.03, "eager": 1.10}})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
