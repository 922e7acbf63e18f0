"""``hiprune-run``: one image through an exported encoder artifact into the language model, with stage timings.

A thin Click layer over :class:`hiprune.runtime.chain.Chain`; heavy libraries load only after the options are
checked, so ``--help`` and bad input answer at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hiprune.errors import ConfigError
from hiprune.runtime.llm.base import RUNTIMES, STAGES, check_llm_runtime, check_max_new_tokens

if TYPE_CHECKING:
    from rich.console import Console

    from hiprune.runtime.chain import Chain, ChainResult

DEFAULT_CPU_LLM_LAYERS = 2  # the built-in 7B-shaped language model on a CPU: the first 2 of its 32 layers
STAGE_LABELS = {
    "preprocess": "preprocess (image processor)",
    "encoder": "encoder artifact",
    "splice": "splice (tokenize + embed)",
    "prefill": "prefill → first token",
    "ttft": "time to first token",
    "decode_per_token": "decode, per token",
}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option("--image", required=True, metavar="PATH", help="Image file (PNG, JPEG, ... anything PIL decodes).")
@click.option("--prompt", required=True, help="The question; the chain formats it and inserts the image.")
@click.option(
    "--llm-runtime", type=click.Choice(list(RUNTIMES)), default="transformers", show_default=True, help="LLM runtime."
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--llm-precision",
    default=None,
    help="Language-model precision: float32, float16, bfloat16 (transformers), q8_0 (llama.cpp). Default: the "
    "runtime's (float32 on CPU, float16 on CUDA; llama.cpp float16).",
)
@click.option("--max-new-tokens", type=int, default=16, show_default=True, help="Greedy tokens to generate (>= 1).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the result here.")
@click.option(
    "--llm",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint whose language model to run. Default: the one the artifact was exported from.",
)
@click.option(
    "--llm-layers",
    type=int,
    default=None,
    help=f"Keep only the first N decoder layers. Default: all ({DEFAULT_CPU_LLM_LAYERS} for the built-in model, CPU).",
)
@click.option(
    "--encoder",
    type=click.Choice(["auto", "torch", "torch-eager"]),
    default="auto",
    show_default=True,
    help="auto: the artifact's own runtime (ONNX Runtime, TensorRT, Core ML); torch: the same encoder in PyTorch "
    "(CUDA graph on cuda); torch-eager: without the graph.",
)
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs before the timed one.")
@click.option("--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="hiprune-export")
def main(
    artifact_dir: Path,
    image: str,
    prompt: str,
    llm_runtime: str,
    device: str,
    llm_precision: str | None,
    max_new_tokens: int,
    json_path: Path | None,
    llm: Path | None,
    llm_layers: int | None,
    encoder: str,
    warmup: int,
    verbose: bool,
) -> None:
    """Run IMAGE + PROMPT through ARTIFACT_DIR's pruned encoder into the language model; print text and timings.

    \b
    hiprune-run out/demo-onnx-k64 --image photo.jpg --prompt "What is in the picture?"
    """
    from rich.console import Console

    from hiprune.cli import run_action

    err = Console(stderr=True)
    args = locals()
    result, chain = run_action(lambda: _execute(err, args), verbose)
    _print_result(Console(), result, chain, warmup)


def _execute(err: Console, args: dict[str, Any]) -> tuple[ChainResult, Chain]:
    """Checks the cheap things first (tokens, JSON path, image), then loads the chain and runs it."""
    check_max_new_tokens(args["max_new_tokens"])
    check_llm_runtime(args["llm_runtime"], args["llm_precision"])
    if args["warmup"] < 0:
        raise ConfigError(f"--warmup {args['warmup']} must be 0 or more")
    json_path = args["json_path"]
    if json_path is not None and not Path(json_path).parent.is_dir():
        raise ConfigError(f"--json {json_path}: its directory does not exist; create it or pass another path")
    from hiprune.artifacts import verify_artifact
    from hiprune.progress import Steps
    from hiprune.runtime.chain import Chain
    from hiprune.runtime.encoders import checkpoint_of
    from hiprune.runtime.preprocess import load_image

    artifact = verify_artifact(args["artifact_dir"])  # its manifest, read once, goes to the chain
    picture = load_image(args["image"])
    layers = args["llm_layers"]
    if checkpoint_of(artifact.manifest) is None and args["llm"] is None:
        layers = _default_model_note(err, args["device"], layers)
    steps = Steps(err)
    with steps.step(f"Loading the encoder artifact and the language model ({args['llm_runtime']}, {args['device']})"):
        options = {"dtype": args["llm_precision"]} if args["llm_precision"] else None
        chain = Chain(
            artifact, args["llm_runtime"], args["device"], args["llm"], layers, encoder=args["encoder"],
            runtime_options=options,
        )  # fmt: skip
    with chain:
        with steps.step(f"Warm-up ({args['warmup']} run{'s' * (args['warmup'] != 1)})"):
            for _ in range(args["warmup"]):
                chain.run(picture, args["prompt"], args["max_new_tokens"])
        with steps.step("Running the chain"):
            result = chain.run(picture, args["prompt"], args["max_new_tokens"])
    if json_path is not None:
        _write_json(Path(json_path), {**result.as_json(), **_context(chain)})
    return result, chain


def _default_model_note(err: Console, device: str, layers: int | None) -> int | None:
    """Says what the built-in language model is; on a CPU, cuts it to a few layers unless told otherwise."""
    if device == "cpu" and layers is None:
        layers = DEFAULT_CPU_LLM_LAYERS
    depth = "all 32 layers" if layers is None else f"its first {layers} of 32 layers (--llm-layers)"
    err.print(
        "[yellow]No checkpoint: the built-in language model is LLaVA-1.5-7B-shaped (Llama, 4096 wide, vocab 32064) "
        f"with RANDOM weights and a local character-level tokenizer, using {depth}"
        f"{' so the run fits a CPU' if device == 'cpu' else ''}. The text is noise; the timings are the point.[/]"
    )
    return layers


def _context(chain: Chain) -> dict[str, Any]:
    return {
        "artifact": str(chain.artifact_dir),
        "encoder_runner": chain.runner.name,
        "target": chain.manifest["target"],
        "num_tokens": chain.manifest["encoder"]["num_tokens"],
        "llm_precision": chain.runtime.precision,
        "note": chain.runtime.note,
        "encoder_note": chain.runner.note,
        "preprocess": chain.preprocess_backend,
        "preprocess_note": chain.preprocess_note,
    }


def _write_json(path: Path, body: dict[str, Any]) -> None:
    """Written beside ``path`` and renamed into place: never half-written."""
    from hiprune.artifacts import written_atomically

    with written_atomically(path) as temp:
        temp.write_text(json.dumps(body, indent=2) + "\n")


def _print_result(console: Console, result: ChainResult, chain: Chain, warmup: int) -> None:
    from rich.table import Table

    console.print(f"[bold]{result.text!r}[/]")
    timings = result.timings.as_dict()
    title = (
        f"hiprune-run: {result.kept_tokens} of {chain.manifest['encoder']['num_tokens']} image tokens, "
        f"{result.prompt_tokens}-token prompt, {len(result.generated_ids)} generated "
        f"({result.llm_runtime}, {result.device}, encoder: {chain.runner.name}; after {warmup} warm-up)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("ms", justify="right")
    table.add_column("share of TTFT", justify="right")
    ttft = timings["ttft"] or 0.0
    for stage in STAGES:
        value = timings[stage]
        share = (
            f"{100 * value / ttft:.0f} %"
            if value is not None and ttft and stage not in ("ttft", "decode_per_token")
            else ""
        )
        table.add_row(STAGE_LABELS[stage], "—" if value is None else f"{value:.1f}", share)
    console.print(table)
    memory = ", ".join(f"{k} {v:.0f} MiB" for k, v in result.peak_memory_mb.items() if v is not None)
    console.print(f"peak memory: {memory}")
    for note in (chain.runtime.note, chain.runner.note, chain.preprocess_note):
        if note:
            console.print(f"[yellow]note: {note}[/]")


if __name__ == "__main__":
    main()
