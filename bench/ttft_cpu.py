"""CPU time to first token through the product's chain, full (576 tokens) vs keep 64, with the default model:
the CLIP-L/336 encoder artifact (ONNX Runtime) and a LLaVA-1.5-7B-wide language model (4096, random weights)
truncated to ``--llm-layers`` decoder layers. Prints JSON; all ratios come from one run.

    python bench/ttft_cpu.py [--llm-runtime transformers,onnxruntime] [--repeats 5] [--llm-layers 2] [--out DIR]
                             [--ort-threads own|shared]

``--llm-runtime`` takes runtimes, each optionally at a precision: ``llama.cpp@q8_0``, ``onnxruntime@float16``
(default: the runtime's own; ``llama.cpp`` needs the optional llamacpp extra).

The goal: the chain's TTFT ratio (full / keep 64) is at least 0.9 x the component-ideal ratio (encoder + prefill
timed on their own), i.e. the runtime glue (preprocessing, splicing, transfers) does not eat the pruning gain.
Needs about 10 GB of free memory; the artifacts and ONNX decoder are cached in OUT/artifacts for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from hiprune.bench import BenchRequest, run_bench
from hiprune.runtime.ort_session import share_cpu_threads

GOAL_CHAIN_OVER_IDEAL = 0.9


def summary(report: dict) -> dict:
    """The numbers the README quotes: TTFT medians, the two ratios, and whether the goal is met."""
    ratio = report["speedups"]["64"]
    by_budget = {b["budget"]: b for b in report["budgets"]}
    return {
        "ttft_full_ms": by_budget["full"]["chain_ms"]["ttft"]["median"],
        "ttft_k64_ms": by_budget["64"]["chain_ms"]["ttft"]["median"],
        "ideal_full_ms": by_budget["full"]["ideal_ms"]["ttft"],
        "ideal_k64_ms": by_budget["64"]["ideal_ms"]["ttft"],
        "prompt_tokens": {k: b["prompt_tokens"] for k, b in by_budget.items()},
        **ratio,
        "goal_chain_over_ideal_min": GOAL_CHAIN_OVER_IDEAL,
        "goal_met": ratio["chain_over_ideal"] >= GOAL_CHAIN_OVER_IDEAL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-runtime", default="transformers", help="comma list of RUNTIME[@PRECISION]")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench-cpu"))
    parser.add_argument(
        "--ort-threads", choices=("own", "shared"), default="own",
        help="each ONNX Runtime session with its own thread pool (as hiprune-bench), or one process-wide pool",
    )  # fmt: skip
    args = parser.parse_args()
    if args.ort_threads == "shared":
        share_cpu_threads()
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "llm_layers": args.llm_layers,
        "ort_threads": args.ort_threads,
    }
    for spec in args.llm_runtime.split(","):
        runtime, _, precision = spec.partition("@")
        options = {"dtype": precision} if precision else {}
        request = BenchRequest(
            keep=(None, 64), llm_runtime=runtime, device="cpu", repeats=args.repeats, llm_layers=args.llm_layers,
            out=args.out / spec, cache=args.out / "artifacts", runtime_options=options,
        )  # fmt: skip
        report = run_bench(request)
        result[spec] = {**summary(report), "llm_precision": report["precision"]["llm"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
