"""``hiprune-bench``: time to first token through the product's own chain, full vs pruned, on this device.

Protocol (the same on every target and device): export or reuse one artifact per budget; open one chain per
budget; warm each up; then ``repeats`` rounds, each running every budget once in turn (interleaved, so drift in
clocks or load hits all budgets alike). Each round also times the **component ideal** of every budget: the encoder
and the language model's prefill, each on its own with the device synchronised around it. The report gives medians
and p90s per stage; ``chain_over_ideal`` near 1 means the runtime keeps the gain the components promise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hiprune.artifacts import Verified, library_versions, verify_artifact
from hiprune.bench_report import REPORT_FORMAT, budget_entry, speedups, write_report
from hiprune.config import HiPruneConfig
from hiprune.errors import ArtifactError, BackendUnavailableError, ConfigError

DEFAULT_KEEP = "full,192,128,64"
DEFAULT_PROMPT = "Describe the image in one sentence."


def parse_keep(text: str) -> tuple[int | None, ...]:
    """``full,192,64`` → ``(None, 192, 64)``; ``full`` (no pruning) is ``None``. Order kept, duplicates refused."""
    budgets: list[int | None] = []
    for item in (part.strip() for part in text.split(",")):
        if item == "full":
            budgets.append(None)
        elif item.isdigit() and int(item) > 0:
            budgets.append(int(item))
        else:
            raise ConfigError(f"--keep {text!r}: {item!r} is not 'full' or a positive integer; e.g. --keep full,64")
        if budgets.count(budgets[-1]) > 1:
            raise ConfigError(f"--keep {text!r} names {item!r} twice; list each budget once")
    return tuple(budgets)


def label(keep: int | None) -> str:
    return "full" if keep is None else str(keep)


@dataclasses.dataclass(frozen=True)
class BenchRequest:
    """One benchmark. ``keep`` entries are token budgets, ``None`` meaning the ``--no-prune`` artifact."""

    model: str | None = None
    target: str = "onnx"
    keep: tuple[int | None, ...] = (None, 192, 128, 64)
    llm_runtime: str = "transformers"
    device: str = "cpu"
    repeats: int = 5
    warmup: int = 1
    out: Path = Path("hiprune-bench")
    cache: Path | None = None
    llm_layers: int | None = None
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 4
    image: Path | None = None
    fresh: bool = False
    target_options: dict[str, str] = dataclasses.field(default_factory=dict)
    runtime_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # LLM runtime kwargs (e.g. eager)
    encoder: str = "auto"  # the artifact's own runtime, or "torch" (the same encoder in PyTorch)

    def validate(self) -> None:
        """Every setting checked before anything is exported or loaded."""
        from hiprune.runtime.llm.base import check_llm_runtime, check_max_new_tokens
        from hiprune.targets import get_target

        get_target(self.target)(self.target_options)
        check_llm_runtime(self.llm_runtime, self.runtime_options.get("dtype"))
        if not self.keep:
            raise ConfigError("--keep is empty; pass budgets such as full,64")
        for name, value, low in (("--repeats", self.repeats, 1), ("--warmup", self.warmup, 0)):
            if value < low:
                raise ConfigError(f"{name} {value} must be at least {low}")
        if self.llm_layers is not None and self.llm_layers < 1:
            raise ConfigError(f"--llm-layers {self.llm_layers} must be at least 1 (or left out for all layers)")
        check_max_new_tokens(self.max_new_tokens)
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {self.device!r} is unknown; choose cpu or cuda")
        if self.image is not None and not Path(self.image).is_file():
            raise ConfigError(f"--image {self.image}: no such file; pass an image path or leave it out")
        if importlib.util.find_spec("matplotlib") is None:
            raise BackendUnavailableError("hiprune-bench draws bench.png with matplotlib; pip install '.[bench]'")
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file; pass a directory")

    def cache_dir(self) -> Path:
        return Path(self.cache) if self.cache is not None else self.out / "artifacts"


def _matches(manifest: dict[str, Any], request: BenchRequest, keep: int | None) -> bool:
    """Whether a cached artifact is the one this request would export: model, target, options, budget, producer."""
    from hiprune import __version__
    from hiprune.export.models import DEFAULT_MODEL_NAME

    hiprune = manifest["hiprune"]
    options = manifest["target_options"]
    return (
        manifest["source"]["source"] == (request.model or DEFAULT_MODEL_NAME)
        and manifest["target"] == request.target
        and hiprune["prune"] == (keep is not None)
        and (keep is None or hiprune["keep"] == keep)
        and all(options.get(k) == v for k, v in request.target_options.items())
        and manifest["versions"].get("hiprune-export") == __version__
    )


def artifact_for(request: BenchRequest, keep: int | None) -> tuple[Verified, bool]:
    """The artifact for ``keep``, checked against its manifest (read once, handed to the chain): reused from the
    cache when that manifest matches the request and every file has its listed size, else exported."""
    from hiprune.api import ExportRequest, export

    directory = request.cache_dir() / f"{request.target}-{label(keep)}"
    if not request.fresh and (directory / "manifest.json").is_file():
        with contextlib.suppress(KeyError, ArtifactError):
            verified = verify_artifact(directory)
            if _matches(verified.manifest, request, keep):
                return verified, True
    config = HiPruneConfig(keep=keep) if keep is not None else HiPruneConfig(prune=False)
    export(ExportRequest(hiprune=config, target=request.target, model=request.model, output=directory, force=True,
                         options=dict(request.target_options)))  # fmt: skip
    return verify_artifact(directory), False


def test_image(shape: tuple[int, ...], path: Path | None) -> Any:
    """The user's image, or a fixed synthetic 4:3 photo-sized RGB array (preprocessing resizes and crops it)."""
    if path is not None:
        return Path(path)
    height = max(int(shape[-2]), 8)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height * 3 // 2, height * 2, 3), dtype=np.uint8)


@contextlib.contextmanager
def _timer(sync: Any, into: list[float]) -> Iterator[None]:
    sync()
    start = time.perf_counter()
    yield
    sync()
    into.append(1000 * (time.perf_counter() - start))


def component_ideal(chain: Any, image: Any, prompt: str, into: dict[str, list[float]]) -> None:
    """The encoder and the prefill, each timed alone (the chain's glue and preprocessing left out)."""
    sync = chain.runtime.synchronize
    pixel_values = chain.preprocess(image)
    with _timer(sync, into["encoder"]):
        image_embeds = chain.encode(pixel_values)
    embeds = chain.splice(prompt, image_embeds)
    with _timer(sync, into["prefill"]):
        chain.runtime.prefill(embeds)


def device_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "kind": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
    }
    name = f"CPU ({os.cpu_count()} cores)"
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    info["name"] = name
    return info


def open_chains(request: BenchRequest, artifacts: dict[int | None, Verified], stack: contextlib.ExitStack) -> dict:
    """One chain per budget; later ones share the first one's language-model runtime where the chain allows it."""
    from hiprune.runtime.chain import Chain

    chains: dict[int | None, Any] = {}
    for keep, directory in artifacts.items():
        first = next(iter(chains.values()), None)
        chain = Chain(
            directory, request.llm_runtime, request.device, llm_layers=request.llm_layers,
            encoder=request.encoder, runtime_options=dict(request.runtime_options), reuse_llm_from=first,
        )  # fmt: skip
        chains[keep] = stack.enter_context(chain)
    return chains


def _progress(quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=quiet, transient=True)


def measure(request: BenchRequest, chains: dict, image: Any, quiet: bool) -> dict[int | None, dict[str, Any]]:
    """Warm-up rounds, then interleaved rounds of chain runs and component-ideal timings for every budget."""
    samples: dict[int | None, dict[str, Any]] = {
        keep: {"chain": {}, "ideal": {"encoder": [], "prefill": []}, "last": None} for keep in chains
    }
    rounds = request.warmup + request.repeats
    with _progress(quiet) as bar:
        task = bar.add_task("warm-up", total=rounds * len(chains))
        for round_index in range(rounds):
            warm = round_index < request.warmup
            bar.update(task, description="warm-up" if warm else f"round {round_index - request.warmup + 1}")
            for keep, chain in chains.items():
                result = chain.run(image, request.prompt, request.max_new_tokens)
                scratch: dict[str, list[float]] = {"encoder": [], "prefill": []}
                component_ideal(chain, image, request.prompt, scratch)
                if not warm:
                    for stage, value in result.timings.as_dict().items():
                        samples[keep]["chain"].setdefault(stage, []).append(value)
                    for part, values in scratch.items():
                        samples[keep]["ideal"][part] += values
                samples[keep]["last"] = result
                bar.advance(task)
    return samples


def run_bench(request: BenchRequest, quiet: bool = False) -> dict[str, Any]:
    """Exports or reuses the artifacts, measures, writes bench.json / bench.md / bench.png; returns the report."""
    from hiprune.progress import Steps

    request.validate()
    steps = Steps(quiet=quiet)
    artifacts, reused = {}, {}
    for keep in request.keep:
        with steps.step(f"Artifact for budget {label(keep)} ({request.target})"):
            artifacts[keep], reused[keep] = artifact_for(request, keep)
    with contextlib.ExitStack() as stack:
        with steps.step(f"Opening {len(artifacts)} chains ({request.llm_runtime} on {request.device})"):
            chains = open_chains(request, artifacts, stack)
        first = next(iter(chains.values()))
        samples = measure(request, chains, test_image(first.input_shape, request.image), quiet)
        budgets = []
        for keep, chain in chains.items():
            last = samples[keep]["last"]
            extra = {"prompt_tokens": last.prompt_tokens, "artifact": str(artifacts[keep].directory),
                     "reused": reused[keep], "generated_ids": last.generated_ids,
                     "peak_memory_mb": last.peak_memory_mb}  # fmt: skip
            budgets.append(budget_entry(label(keep), chain.kept, samples[keep]["chain"], samples[keep]["ideal"], extra))
        report = _report(request, first, budgets)
    write_report(report, request.out)
    return report


def _encoder_precision(chain: Any) -> str:
    """The PyTorch runner says whether it runs fp16; an artifact runs at the precision it was exported with."""
    fp16 = getattr(chain.runner, "fp16", None)
    if fp16 is not None:
        return "fp16" if fp16 else "fp32"
    return str(chain.manifest["target_options"].get("precision", "fp32"))


def _report(request: BenchRequest, chain: Any, budgets: list[dict]) -> dict[str, Any]:
    from hiprune.export.models import DEFAULT_MODEL_NAME

    runtime = chain.runtime
    versions = library_versions()
    from importlib import metadata

    for package in ("matplotlib", "llama-cpp-python", "gguf"):  # the plot, and the llama.cpp runtime's
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "format": REPORT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": request.model or DEFAULT_MODEL_NAME,
        "target": request.target,
        "device": device_info(request.device),
        "versions": versions,
        "precision": {"encoder": _encoder_precision(chain), "llm": runtime.precision},
        "runtimes": {
            "encoder": chain.runner.name,
            "llm": runtime.name,
            "llm_options": dict(request.runtime_options),
            "llm_note": runtime.note,
            "encoder_note": chain.runner.note,
            "preprocess": chain.preprocess_backend,
            "preprocess_note": chain.preprocess_note,
        },  # fmt: skip
        "settings": {
            "encoder": request.encoder,
            "repeats": request.repeats,
            "warmup": request.warmup,
            "prompt": request.prompt,
            "max_new_tokens": request.max_new_tokens,
            "llm_layers": request.llm_layers,
            "image": str(request.image) if request.image else "synthetic",
        },  # fmt: skip
        "budgets": budgets,
        "speedups": speedups(budgets),
    }
