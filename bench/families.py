"""Encoder families at real size (random weights): the LLaVA-NeXT-7B tower at 672x672 (5 crops) and a
LLaVA-Interleave-0.5B-shaped SigLIP tower (so400m/14-384, 729 tokens). Prints JSON; ratios come from one run.

    python bench/families.py [--runs 7] [--threads 2] [--skip-export-cost] [--skip-latency]

Export cost: `hiprune-export --target onnx --keep 320 --model DIR` in a child process on a saved NeXT-7B-shaped
checkpoint (CLIP-L/14-336 tower, 4096-d projector, fp16 weights as llava-hf ships them, a one-layer stub language
model), wall time and the child's peak RSS. Latency: ORT CPU pruned / --no-prune medians per family, as
bench/ort_overhead.py measures LLaVA-1.5 (same interleaved runs, same session options).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ort_overhead import _CHILD, build_artifact, interleaved_latency
from rich.console import Console

from hiprune.config import HiPruneConfig

console = Console(stderr=True)
NEXT_KEEP = 320  # the paper's middle LLaVA-NeXT budget (64 per crop over 5 crops)
SIGLIP_KEEP = 192


def next_7b_config():
    """llava-v1.6-vicuna-7b's vision side: CLIP-L/14-336, feature layer -2, its five pinpoints, 4096-d projector;
    the language model is a one-layer stub (only its hidden size is read)."""
    from transformers import LlamaConfig, LlavaNextConfig

    from hiprune.export.models import default_llava15_config

    vision = default_llava15_config().vision_config  # the same CLIP-L/14-336 tower as LLaVA-1.5-7B
    text = LlamaConfig(hidden_size=4096, intermediate_size=1024, num_hidden_layers=1, vocab_size=128)
    return LlavaNextConfig(vision_config=vision, text_config=text, vision_feature_layer=-2)


def siglip_05b_config():
    """llava-interleave-qwen-0.5b's vision side: SigLIP so400m/14-384 (27 layers, 1152 wide, 27x27 tokens),
    feature layer -1, strategy full, projector to Qwen2-0.5B's 896."""
    from transformers import LlamaConfig, LlavaConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )
    text = LlamaConfig(hidden_size=896, intermediate_size=1024, num_hidden_layers=1, vocab_size=128)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
    )


def save_next_checkpoint(directory: Path) -> Path:
    import torch
    from transformers import LlavaNextForConditionalGeneration

    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlavaNextForConditionalGeneration(next_7b_config()).half()
    model.save_pretrained(directory)
    return directory


def export_cost(model_dir: Path, keep: int) -> dict[str, object]:
    """Wall time and peak RSS of `hiprune-export --target onnx --keep K --model DIR` in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "hwm_kib"
        cmd = [sys.executable, "-c", _CHILD, str(report), "--target", "onnx", "--keep", str(keep)]
        cmd += ["--model", str(model_dir), "--output", f"{tmp}/o"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_kib = int(report.read_text())
        data = Path(tmp) / "o" / "model.onnx.data"
        size = data.stat().st_size if data.exists() else 0
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "keep": keep,
        "data_gib": round(size / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-export-cost", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    report: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.machine()},
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_export_cost:
            with console.status("saving a LLaVA-NeXT-7B-shaped checkpoint (fp16, random weights)"):
                checkpoint = save_next_checkpoint(Path(tmp) / "next-7b")
            with console.status(f"timing `hiprune-export --target onnx --keep {NEXT_KEEP} --model <next-7b>`"):
                report["next_7b_672x672_export"] = export_cost(checkpoint, NEXT_KEEP)
            console.print(f"✓ NeXT export: {report['next_7b_672x672_export']}")
        models = {
            f"llava-next-7b 672x672 (5 crops), K={NEXT_KEEP}": (next_7b_config(), NEXT_KEEP),
            f"siglip-so400m/14-384 (729 tokens), K={SIGLIP_KEEP}": (siglip_05b_config(), SIGLIP_KEEP),
        }
        for name, (config, keep) in ({} if args.skip_latency else models).items():
            with console.status(f"{name}: exporting pruned and full artifacts"):
                pruned = build_artifact(config, HiPruneConfig(keep=keep), Path(tmp) / name / "pruned")
                full = build_artifact(config, HiPruneConfig(prune=False), Path(tmp) / name / "full")
            with console.status(f"{name}: {args.runs} interleaved runs each on ORT CPU"):
                report[name] = interleaved_latency(pruned, full, args.runs, args.threads)
            console.print(f"✓ {name}: {report[name]}")
    report["goals"] = {"ratio_pruned_over_full_max": 1.03}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
