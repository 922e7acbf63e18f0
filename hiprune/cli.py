"""``hiprune-export``: a thin Click layer over :func:`hiprune.api.export` (and ``build-engine``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from hiprune.config import DEFAULT_ALPHA, NEIGHBOR_MODES, Neighbors
from hiprune.errors import HiPruneError, one_line, typed_line
from hiprune.targets import OPTIONS, TARGETS

if TYPE_CHECKING:
    from rich.console import Console

    from hiprune.api import ExportResult

F = TypeVar("F", bound=Callable[..., Any])


def target_options(command: F) -> F:
    """One ``--flag`` per declared target option (hiprune.targets.options), help and values from the declaration.

    Values are checked by the chosen target, so a refused value gets its reason rather than click's list.
    """
    for option in reversed(OPTIONS):
        metavar = "[" + "|".join(option.all_values()) + "]"
        command = click.option(option.flag, option.key, default=None, metavar=metavar, help=option.describe())(command)
    return command


def run_action(action: Callable[[], Any], verbose: bool) -> Any:
    """Runs ``action``; an error becomes one line on stderr and its exit code (a traceback with --verbose).

    A HiPruneError exits with its own code; anything else is a bug here and exits 1, still as one line.
    """
    try:
        return action()
    except HiPruneError as exc:
        if verbose:
            raise
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing was written", err=True)
        sys.exit(130)
    except Exception as exc:
        if verbose:
            raise
        click.echo(
            f"error: unexpected {typed_line(exc)}; rerun with --verbose for the traceback and report it", err=True
        )
        sys.exit(1)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option("--target", type=click.Choice(sorted(TARGETS)), default=None, help="Artifact to build (required).")
@click.option("--keep", type=int, default=64, show_default=True, help="Visual tokens kept per image (K).")
@click.option(
    "--model",
    metavar="ID_OR_DIR",
    default=None,
    help="LLaVA-1.5 checkpoint directory or cached hub id. Default: LLaVA-1.5-7B architecture, random weights.",
)
@click.option(
    "--alpha",
    type=float,
    default=DEFAULT_ALPHA,
    show_default=True,
    help="Budget share for anchors + buffers; anchors = round(K*alpha/5).",
)
@click.option(
    "--object-layer",
    type=int,
    default=None,
    help="1-based ViT layer whose attention picks anchors. Default: 9 for 24-layer towers, scaled otherwise.",
)
@click.option(
    "--neighbors",
    type=click.Choice(NEIGHBOR_MODES),
    default="paper",
    show_default=True,
    help="paper: flat-index neighbours as the reference code; grid: true 2-D neighbours.",
)
@click.option(
    "--resolution",
    metavar="HxW",
    default=None,
    help="LLaVA-NeXT: the grid pinpoint the artifact takes (its crops). Default: the square pinpoint with most tiles.",
)
@click.option(
    "--layout",
    metavar="LAYOUT",
    default=None,
    help="LLaVA-NeXT: order of the kept crop tokens; paper (default: base, then the stitched tile grid).",
)
@click.option("--no-prune", is_flag=True, help="Same truncated encoder + projector keeping all tokens (baseline).")
@click.option("--batch", type=int, default=1, show_default=True, help="Static batch size of the artifact.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output directory. Default: ./hiprune-<target>-k<K> (or -full).",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.option(
    "--allow-pickle", is_flag=True, help="Accept pytorch_model.bin weights (pickle) when no safetensors exist."
)
@target_options
@click.option("--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="hiprune-export")
@click.pass_context
def main(
    ctx: click.Context,
    target: str | None,
    keep: int,
    model: str | None,
    alpha: float,
    object_layer: int | None,
    neighbors: str,
    resolution: str | None,
    layout: str | None,
    no_prune: bool,
    batch: int,
    output: Path | None,
    force: bool,
    allow_pickle: bool,
    verbose: bool,
    **target_settings: str | None,
) -> None:
    """Export a VLM's vision encoder + projector with HiPrune token selection built into the graph.

    \b
    hiprune-export --target onnx --keep 64 [--model DIR_OR_ID] ...
    hiprune-export build-engine BUNDLE_DIR        (on the device, for --target tensorrt bundles)
    """
    if ctx.invoked_subcommand is not None:
        run_action(lambda: _refuse_export_options(ctx), verbose)
        return
    if target is None:
        raise click.UsageError(f"Missing option '--target' (one of: {', '.join(sorted(TARGETS))}).")
    from rich.console import Console

    def action() -> ExportResult:
        from hiprune.api import ExportRequest, export
        from hiprune.config import EncoderOptions, HiPruneConfig
        from hiprune.progress import Steps

        request = ExportRequest(
            hiprune=HiPruneConfig(
                keep=keep,
                alpha=alpha,
                object_layer=object_layer,
                neighbors=cast(Neighbors, neighbors),
                prune=not no_prune,
            ),
            target=target,
            model=model,
            batch=batch,
            output=output,
            force=force,
            allow_pickle=allow_pickle,
            encoder=EncoderOptions(resolution=resolution, layout=layout),
            options={k: v for k, v in target_settings.items() if v is not None},
        )
        return export(request, Steps(Console(stderr=True)))

    _print_summary(Console(), run_action(action, verbose))


def _refuse_export_options(ctx: click.Context) -> None:
    """Export options given before a subcommand would be silently dropped: refused instead (``--verbose`` applies)."""
    from hiprune.errors import ConfigError

    source = click.core.ParameterSource.COMMANDLINE
    given = [
        param.opts[0] if isinstance(param, click.Option) and param.is_flag else f"{param.opts[0]} {ctx.params[name]}"
        for param in ctx.command.params
        if (name := param.name or "") != "verbose" and ctx.get_parameter_source(name) == source
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to exports, not to "
            f"`{ctx.invoked_subcommand}`; drop {'it' if len(given) == 1 else 'them'} or run the export on its own"
        )


def _verbose(local: bool) -> bool:
    """``--verbose`` after the subcommand, or before it (the group's)."""
    return local or bool(click.get_current_context().find_root().params.get("verbose"))


@main.command("build-engine")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option(
    "--verify",
    "verify_level",
    type=click.Choice(("sizes", "full")),
    default="sizes",
    show_default=True,
    help="Check the bundle against its manifest first: file sizes, or sizes and sha256.",
)
@click.option("--verbose", is_flag=True, help="Show tracebacks on errors.")
def build_engine_command(bundle_dir: Path, verify_level: str, verbose: bool) -> None:
    """Build model.engine from a --target tensorrt bundle, on the device (TensorRT + GPU, or TensorRT-RTX)."""

    def action() -> Any:
        from hiprune.runtime.tensorrt_build import build_engine_from_bundle

        return build_engine_from_bundle(bundle_dir, full=verify_level == "full")

    check, not_run = run_action(action, _verbose(verbose))
    # describe() names both sides: the bundle's graph on ONNX Runtime, or the fp32 reference outputs (bf16)
    verdict = check.describe() if check is not None else f"engine check not run here ({not_run})"
    click.echo(f"built {bundle_dir / 'model.engine'}; {verdict}")


@main.command("verify")
@click.argument("artifact_dir", type=click.Path(path_type=Path))
@click.option("--sizes-only", is_flag=True, help="Compare file sizes only (fast); by default sha256 too.")
@click.option("--verbose", is_flag=True, help="Show tracebacks on errors.")
def verify_command(artifact_dir: Path, sizes_only: bool, verbose: bool) -> None:
    """Check an artifact directory against its manifest (after copying it to a device): every file present,
    sizes and sha256 as recorded, manifest format known. Exit 8 names the first bad file."""

    def action() -> Any:
        from hiprune.artifacts import verify_artifact

        return verify_artifact(artifact_dir, full=not sizes_only)

    click.echo(run_action(action, _verbose(verbose)).describe())


def _print_summary(console: Console, result: ExportResult) -> None:
    from rich.table import Table

    table = Table(title="hiprune-export", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in result.summary().items():
        table.add_row(key, value)
    console.print(table)
    if result.note:
        console.print(result.note, markup=False, highlight=False)  # notes quote paths and pip extras: '.[x]'


if __name__ == "__main__":
    main()
