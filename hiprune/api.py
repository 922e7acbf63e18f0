"""The library API the CLI is a thin layer over: :func:`export` an :class:`ExportRequest`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hiprune import __version__
from hiprune.artifacts import check_output_dir, ensure_space, human_size, staged_output, write_manifest
from hiprune.config import EncoderOptions, HiPruneConfig
from hiprune.contract import IOContract
from hiprune.errors import ConfigError, ExportError, HiPruneError, ResourceError, as_hiprune_error
from hiprune.progress import Steps
from hiprune.runtime.compare import Comparison
from hiprune.targets import BuildJob, BuildOutput, get_target

if TYPE_CHECKING:
    from hiprune.export.models import LoadedEncoder


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """One export. ``model=None`` is the built-in LLaVA-1.5-7B architecture with random weights."""

    hiprune: HiPruneConfig = dataclasses.field(default_factory=HiPruneConfig)
    target: str = "onnx"
    model: str | None = None
    batch: int = 1
    output: Path | None = None
    force: bool = False
    allow_pickle: bool = False
    encoder: EncoderOptions = dataclasses.field(default_factory=EncoderOptions)  # crops: --resolution, --layout
    options: dict[str, str] = dataclasses.field(default_factory=dict)  # target-specific: precision, device, ...

    def output_dir(self) -> Path:
        if self.output is not None:
            return Path(self.output)
        budget = f"k{self.hiprune.keep}" if self.hiprune.prune else "full"
        return Path(f"hiprune-{self.target}-{budget}")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where the artifact went and what the post-export run measured (``comparison_label``: what that check
    compared, the summary's row name)."""

    output: Path
    artifact: Path
    manifest: dict[str, Any]
    comparison: Comparison | None
    note: str | None
    comparison_label: str = "check vs PyTorch"

    def summary(self) -> dict[str, Any]:
        """The rows the CLI prints."""
        io = IOContract.from_manifest(self.manifest)
        rows = {
            "target": " ".join(
                [self.manifest["target"], *(f"{k}={v}" for k, v in self.manifest["target_options"].items())]
            ),
            "source": self.manifest["source"]["source"],
            "kept tokens": f"{io.kept} of {io.num_tokens}",
            **{info.name: info.describe() for info in (*io.inputs, *io.outputs)},
            "size on disk": human_size(sum(f["bytes"] for f in self.manifest["files"].values())),
            "output": str(self.output),
        }
        if self.comparison is not None:
            rows[self.comparison_label] = self.comparison.describe()
        return rows


def export(request: ExportRequest, steps: Steps | None = None) -> ExportResult:
    """Loads the encoder, builds the target's artifact in a staging dir, checks it, and moves it into place.

    Every setting is validated before anything is read or written; on any error nothing is left behind.
    """
    steps = steps or Steps(quiet=True)
    target = get_target(request.target)(request.options)
    if request.batch < 1:
        raise ConfigError(f"--batch {request.batch} must be at least 1; pass the number of images per call")
    request.hiprune.validate_static()
    if request.allow_pickle and request.model is None:
        raise ConfigError(
            "--allow-pickle applies to a checkpoint given with --model (the default has no weights); drop it"
        )
    output = request.output_dir()
    check_output_dir(output, request.force)
    target.check_available()
    try:
        return _build(request, target, output, steps)
    except HiPruneError:
        raise
    except Exception as exc:
        raise as_hiprune_error(exc, f"the {request.target} export") from exc


def _build(request: ExportRequest, target: Any, output: Path, steps: Steps) -> ExportResult:
    """Everything that reads or writes, inside the staging directory so that any failure leaves nothing."""
    from hiprune.export.models import load_encoder

    if request.model is None:
        steps.note(
            "[yellow]No --model given: exporting the LLaVA-1.5-7B vision tower + projector architecture "
            "(CLIP ViT-L/14-336, 4096-d) with RANDOM weights.[/]"
        )
    with staged_output(output, request.force, notify=steps.note) as stage:
        with steps.step("Loading the vision tower and projector"):
            loaded = load_encoder(request.model, request.hiprune, request.allow_pickle, request.encoder)
        ensure_space(stage, _artifact_bytes(loaded.encoder, target.settings), output)
        _check_memory(request, loaded)
        job = BuildJob(
            encoder=loaded.encoder,
            io=loaded.contract(request.batch),
            source=loaded.source["source"],
            metadata=_metadata(request, loaded),
            steps=steps,
        )
        built = target.build(job, stage)
        if built.comparison is None or not built.comparison.ok:
            check = "no check ran" if built.comparison is None else built.comparison.describe()
            raise ExportError(f"the {request.target} artifact is not verified against PyTorch: {check}")
        io = built.io or job.io
        body = {**_manifest_body(request, loaded, io, built, target.settings), **_chain_records(loaded, io, stage)}
        manifest = write_manifest(stage, body)
    return ExportResult(output, output / built.artifact, manifest, built.comparison, built.note, built.comparison_label)


def _check_memory(request: ExportRequest, loaded: LoadedEncoder) -> None:
    """Refuses, before tracing, a batch whose export or check would need more memory than is available."""
    from hiprune.export.memory import available_memory, estimate_memory

    available = available_memory()
    if available is None:
        return
    spec, vision = loaded.adapter.spec, getattr(loaded.adapter.config, "vision_config", None)
    heads = getattr(vision, "num_attention_heads", None) or max(1, spec.feature_dim // 64)
    intermediate = getattr(vision, "intermediate_size", None) or 4 * spec.feature_dim
    weights = sum(p.numel() * p.element_size() for p in loaded.encoder.parameters())
    estimate = estimate_memory(spec, request.batch, weights, heads, intermediate, request.target != "onnx")
    if estimate.peak <= available:
        return
    largest = estimate.largest_batch(available)
    fix = f"pass --batch {largest} or less" if largest else "even --batch 1 does not fit; free memory first"
    raise ResourceError(
        f"--batch {request.batch} needs about {human_size(estimate.export)} to export and "
        f"{human_size(estimate.check)} for the post-export check, but {human_size(available)} is available; "
        f"the largest batch that fits is {largest}; {fix}"
    )


def _artifact_bytes(encoder: Any, settings: dict[str, str]) -> int:
    """The artifact's weights at the target's precision: a lower bound of what it writes."""
    width = 2 if settings.get("precision") in ("fp16", "bf16") else 4
    return sum(p.numel() for p in encoder.parameters()) * width


def _metadata(request: ExportRequest, loaded: LoadedEncoder) -> dict[str, str]:
    spec, plan = loaded.adapter.spec, loaded.encoder.plan
    selection = {**plan.as_metadata(), "hiprune.deep_layer": str(plan.deep_layer)}
    return {
        **(selection if plan.hiprune.prune else plan.hiprune.as_metadata()),
        "hiprune.grid": f"{spec.grid[0]}x{spec.grid[1]}",
        "hiprune.encoder": spec.family,
        "hiprune.source": loaded.source["source"],
        "hiprune.batch": str(request.batch),
        "hiprune.producer": f"hiprune-export {__version__}",
    }


def _crops(spec: Any) -> dict[str, Any]:
    if spec.crops is None:
        return {}
    height, width = spec.crops.resolution
    return {
        "resolution": f"{height}x{width}",
        "tiles": list(spec.crops.tiles),
        "views": spec.views,
        "layout": spec.crops.layout,
    }


def _chain_records(loaded: LoadedEncoder, io: IOContract, stage: Path) -> dict[str, Any]:
    """What a device needs to preprocess and splice without the checkpoint: the image processor's config (written
    beside the artifact), the image sequence length, and the language model's weights digest (``hiprune-run``)."""
    from hiprune.runtime.llm.loading import language_model_record
    from hiprune.runtime.preprocess import write_image_processor

    checkpoint = loaded.source.get("path")
    return {
        "preprocessing": {"image_processor": write_image_processor(checkpoint, stage), "image_seq_length": io.kept},
        "language_model": language_model_record(checkpoint),
    }


def _manifest_body(
    request: ExportRequest, loaded: LoadedEncoder, io: IOContract, built: BuildOutput, target_settings: dict[str, str]
) -> dict[str, Any]:
    spec, plan = loaded.adapter.spec, loaded.encoder.plan
    return {
        "target": request.target,
        "artifact": built.artifact,
        "source": loaded.source,
        "hiprune": _hiprune_section(plan),
        "encoder": {
            "family": spec.family,
            "num_layers": spec.num_layers,
            "grid": list(spec.grid),
            "num_tokens": io.num_tokens,
            "kept": io.kept,
            **_crops(spec),
        },
        **io.as_manifest(),
        "target_options": target_settings,
        "target_details": built.details,
        "verification": None if built.comparison is None else dataclasses.asdict(built.comparison),
    }


def _hiprune_section(plan: Any) -> dict[str, Any]:
    """The selection's settings; with ``--no-prune`` only ``prune: false`` (no budget was applied)."""
    if not plan.hiprune.prune:
        return {"prune": False}
    return {
        **dataclasses.asdict(plan.hiprune),
        "anchors": plan.view_anchors,
        "keep_per_view": plan.view_keep,
        "deep_layer": plan.deep_layer,
    }
