"""ONNX Runtime CPU latency of the pruned artifact vs the --no-prune artifact of the same model, and the
export cost (wall time, peak RSS) of the default CLIP-L/336 model for each target. Prints JSON; ratios come
from one run.

    python bench/ort_overhead.py [--runs 15] [--threads 2] [--skip-export-cost] [--skip-latency]

Latency: both artifacts get identical session options; after warm-up, runs alternate pruned / full and the
medians are compared (ratio = pruned / full; the goal is <= 1.03, i.e. the selection costs no more than the
projector work it saves). Export cost: `hiprune-export --target T --keep 64` in a child process, per target
(tensorrt writes a build bundle where TensorRT is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from hiprune.config import HiPruneConfig
from hiprune.contract import PIXEL_VALUES
from hiprune.export.adapters import adapter_for
from hiprune.export.encoder import build_encoder
from hiprune.export.models import LoadedEncoder, default_llava15_config
from hiprune.progress import Steps
from hiprune.runtime import OrtRunner
from hiprune.targets.base import BuildJob
from hiprune.targets.onnx import OnnxTarget

console = Console(stderr=True)


def vit_b16_224_config():
    """A ViT-B/16-224-sized LLaVA: CLIP-B tower (12 layers, 768 wide, 14x14 patches), 4096-d projector."""
    from transformers import CLIPVisionConfig

    config = default_llava15_config()
    config.vision_config = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
        hidden_act="quick_gelu",
    )
    return config


def build_artifact(config, hiprune: HiPruneConfig, directory: Path) -> Path:
    adapter = adapter_for(config, "bench")
    loaded = LoadedEncoder(build_encoder(adapter, hiprune, tensors=None), adapter, {"source": "bench"})
    directory.mkdir(parents=True)
    job = BuildJob(loaded.encoder, loaded.contract(batch=1), "bench", metadata={}, steps=Steps(quiet=True))
    OnnxTarget().build(job, directory)
    return directory / "model.onnx"


def interleaved_latency(pruned: Path, full: Path, runs: int, threads: int) -> dict[str, float]:
    with OrtRunner(pruned, intra_op_threads=threads) as a, OrtRunner(full, intra_op_threads=threads) as b:
        shape = a.input_specs()[0].shape
        feed = {PIXEL_VALUES: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        for _ in range(2):
            a.infer(feed)
            b.infer(feed)
        times: dict[str, list[float]] = {"pruned": [], "full": []}
        for _ in range(runs):
            for name, runner in (("pruned", a), ("full", b)):
                runner.infer(feed)
                times[name].append(runner.last_inference_s)
    pruned_ms, full_ms = (statistics.median(times[k]) * 1e3 for k in ("pruned", "full"))
    return {
        "pruned_median_ms": round(pruned_ms, 2),
        "full_median_ms": round(full_ms, 2),
        "ratio_pruned_over_full": round(pruned_ms / full_ms, 4),
        "runs_each": runs,
    }


# The child reports its own peak RSS (VmHWM of its address space, which starts fresh at exec). getrusage's
# RUSAGE_CHILDREN would not do: Linux carries the parent's RSS at fork into the child's ru_maxrss.
_CHILD = (
    "import atexit, sys\n"
    "from pathlib import Path\n"
    "from hiprune.cli import main\n"
    "report = Path(sys.argv.pop(1))\n"
    "def hwm():\n"
    "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "    report.write_text(line.split()[1])\n"
    "atexit.register(hwm)\n"
    "main()\n"
)


def export_cost(keep: int, target: str) -> dict[str, float]:
    """Wall time and peak RSS of `hiprune-export --target T --keep K` (default model) in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "hwm_kib"
        cmd = [
            sys.executable,
            "-c",
            _CHILD,
            str(report),
            "--target",
            target,
            "--keep",
            str(keep),
            "--output",
            f"{tmp}/o",
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_kib = int(report.read_text())
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(peak_kib / 2**20, 2), "keep": keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=int, default=64)
    parser.add_argument("--skip-export-cost", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--targets", default="onnx,tensorrt,coreml", help="targets whose export cost is measured")
    args = parser.parse_args()
    report: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.machine()},
        "threads": args.threads,
    }
    if not args.skip_export_cost:  # first, before this process holds any model
        report["default_export"] = {}
        for target in args.targets.split(","):
            with console.status(f"default model: timing `hiprune-export --target {target} --keep {args.keep}`"):
                report["default_export"][target] = export_cost(args.keep, target)
            console.print(f"✓ default export, {target}: {report['default_export'][target]}")
    models = {"vit-b16-224": vit_b16_224_config(), "clip-l14-336 (default)": default_llava15_config()}
    if args.skip_latency:
        models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in models.items():
            with console.status(f"{name}: exporting pruned (K={args.keep}) and full artifacts"):
                pruned = build_artifact(config, HiPruneConfig(keep=args.keep), Path(tmp) / name / "pruned")
                full = build_artifact(config, HiPruneConfig(prune=False), Path(tmp) / name / "full")
            with console.status(f"{name}: {args.runs} interleaved runs each on ORT CPU"):
                report[name] = interleaved_latency(pruned, full, args.runs, args.threads)
            console.print(f"✓ {name}: {report[name]}")
    report["goals"] = {
        "ratio_pruned_over_full_max": 1.03,
        "default_export_wall_s_max": 120,
        "default_export_peak_rss_gib_max": 6,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
