"""``hiprune-bench``: a thin Click layer over :func:`hiprune.bench.run_bench` (torch is imported only when it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hiprune.bench import DEFAULT_KEEP, DEFAULT_PROMPT, BenchRequest, parse_keep
from hiprune.bench_report import interval_text

TARGETS = ("onnx", "tensorrt", "coreml")  # the registry's names, listed here so --help imports no torch


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--model", metavar="ID_OR_DIR", default=None, help="Checkpoint. Default: LLaVA-1.5-7B shapes, random.")
@click.option("--target", type=click.Choice(TARGETS), default="onnx", show_default=True, help="Encoder artifact.")
@click.option("--keep", default=DEFAULT_KEEP, show_default=True, help="Budgets, comma list; full = --no-prune.")
@click.option("--llm-runtime", default="transformers", show_default=True, help="transformers, onnxruntime, llama.cpp.")
@click.option("--llm-precision", default=None, help="Language-model precision (float32, float16, bfloat16, q8_0).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--encoder", default="auto", show_default=True, help="auto (the artifact's runtime), torch, torch-eager.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Measured rounds (each runs every budget).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Unmeasured rounds first.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("hiprune-bench"), show_default=True,
              help="Where bench.json, bench.md and bench.png go.")  # fmt: skip
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Artifact cache. Default: OUT/artifacts.")
@click.option("--fresh", is_flag=True, help="Re-export the artifacts even when the cache holds matching ones.")
@click.option("--llm-layers", type=int, default=None, help="Keep only the first N decoder layers (CPU runs).")
@click.option("--image", type=click.Path(path_type=Path), default=None, help="Image file. Default: synthetic.")
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True)
@click.option("--max-new-tokens", type=int, default=4, show_default=True, help="Greedy tokens per run.")
@click.option("--precision", default=None, help="Encoder artifact precision (tensorrt, coreml).")
@click.option("--verbose", is_flag=True, help="Show tracebacks on errors.")
def main(**kwargs: Any) -> None:
    """Time to first token through the chain (image → encoder artifact → LLM), full vs pruned budgets.

    \b
    hiprune-bench --keep full,64 --llm-layers 2 --out out/bench
    """
    from hiprune.cli import run_action

    verbose = kwargs.pop("verbose")
    precision = kwargs.pop("precision")
    options = {"precision": precision} if precision else {}
    llm_precision = kwargs.pop("llm_precision")
    runtime_options = {"dtype": llm_precision} if llm_precision else {}

    def action() -> tuple[dict[str, Any], BenchRequest]:
        from hiprune.bench import run_bench

        keep = parse_keep(kwargs["keep"])
        request = BenchRequest(**{**kwargs, "keep": keep}, target_options=options, runtime_options=runtime_options)
        return run_bench(request), request

    report, request = run_action(action, verbose)
    print_summary(report, request.out)


def print_summary(report: dict[str, Any], out: Path) -> None:
    """Chain medians beside the component ideal, and the full-over-pruned ratios."""
    from rich.console import Console
    from rich.table import Table

    title = f"hiprune-bench · {report['runtimes']['llm']} · {report['device']['name']}"
    table = Table(title=title, title_justify="left")
    for column in ("budget", "kept", "encoder", "prefill", "TTFT chain", "TTFT ideal", "decode/token"):
        table.add_column(column, justify="right")
    for entry in report["budgets"]:
        chain = entry["chain_ms"]
        table.add_row(
            entry["budget"],
            str(entry["kept_tokens"]),
            *(_ms(chain[s]) for s in ("encoder", "prefill", "ttft")),
            f"{entry['ideal_ms']['ttft']:.1f}",
            _ms(chain["decode_per_token"]),
        )
    console = Console()
    console.print(table)
    for budget, ratio in report["speedups"].items():
        console.print(
            f"TTFT full / {budget}: chain {ratio['chain_ttft_full_over_pruned']:.2f}x · component ideal "
            f"{ratio['ideal_ttft_full_over_pruned']:.2f}x · chain keeps {ratio['chain_over_ideal']:.0%} of the gain"
            f"{interval_text(ratio.get('chain_over_ideal_90ci'))}"
        )
    console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'} (medians; p90 in the files)")


def _ms(summary: dict[str, float] | None) -> str:
    return "–" if summary is None else f"{summary['median']:.1f} ms"


if __name__ == "__main__":
    main()
