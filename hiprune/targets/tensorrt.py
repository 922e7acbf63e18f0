"""``--target tensorrt``: a strongly typed TensorRT engine, or a bundle that builds it on the device.

The graph is the spine's, made parser-ready (Select inlined, constants folded, checked against TensorRT's
op table) in the requested precision: fp16 by default as a *strongly typed* network, with the selection,
its score chains and layernorms kept fp32 (``hiprune.graphs.precision``). Where TensorRT and a GPU are present
the engine is built through Polygraphy's loaders; elsewhere (``--build auto``/``defer``) the output directory
is a bundle: ``model.onnx``, ``build_engine.sh`` (trtexec, same settings), ``compare.sh`` (Polygraphy,
engine vs ONNX Runtime) and ``manifest.json``, which ``hiprune-export build-engine DIR`` reads on the device.
"""

from __future__ import annotations

import dataclasses
import shlex
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hiprune import __version__
from hiprune.artifacts import MANIFEST, read_manifest, write_manifest
from hiprune.backends import tensorrt_missing
from hiprune.contract import IMAGE_EMBEDS, INDICES, PIXEL_VALUES, IOContract
from hiprune.errors import BackendUnavailableError, ConfigError, ExportError
from hiprune.graphs.pipelines import tensorrt_ready
from hiprune.runtime.compare import TOLERANCES, Comparison, compare_outputs
from hiprune.targets.base import BuildJob, BuildOutput, Target
from hiprune.targets.spine import REFERENCE_TOLERANCE, check_input, check_on_ort, save_model, traced_and_checked

MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
TIMING_CACHE = "timing.cache"
BUILD_LOG = "build.log"


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Build settings sized for a device class."""

    name: str
    description: str
    workspace_mib: int  # builder scratch memory pool; Jetson shares it with the CPU
    builder_optimization_level: int  # 0-5; 3 is TensorRT's default, 4-5 search longer for faster engines
    tensorrt: str  # the TensorRT the flags assume


PROFILES: dict[str, DeviceProfile] = {
    "gpu": DeviceProfile("gpu", "discrete NVIDIA GPU (RTX, datacenter)", 8192, 4, "TensorRT 10.x"),
    "jetson-orin": DeviceProfile(
        "jetson-orin", "Jetson AGX / Orin NX / Orin Nano", 2048, 3, "TensorRT 10.3+ (JetPack 6.1 / 6.2)"
    ),
    "jetson-thor": DeviceProfile("jetson-thor", "Jetson AGX Thor", 8192, 4, "TensorRT 10.13+ (JetPack 7)"),
}


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Everything an engine build depends on; rendered both as trtexec flags and as Polygraphy loader args."""

    device: str
    precision: str
    workspace_mib: int
    builder_optimization_level: int

    @classmethod
    def for_profile(cls, device: str, precision: str) -> EngineSettings:
        profile = PROFILES[device]
        return cls(device, precision, profile.workspace_mib, profile.builder_optimization_level)

    def trtexec_args(self) -> list[str]:
        return [
            f"--onnx={MODEL_FILE}",
            f"--saveEngine={ENGINE_FILE}",
            "--stronglyTyped",  # precision comes from the graph's types (fp32 island kept)
            f"--memPoolSize=workspace:{self.workspace_mib}M",
            f"--builderOptimizationLevel={self.builder_optimization_level}",
            f"--timingCacheFile={TIMING_CACHE}",
            "--profilingVerbosity=detailed",
            "--exportLayerInfo=layers.json",
            "--skipInference",
        ]

    def polygraphy_args(self) -> list[str]:
        return [
            "--strongly-typed",
            "--pool-limit",
            f"workspace:{self.workspace_mib}M",
            "--builder-optimization-level",
            str(self.builder_optimization_level),
        ]


class TensorRTTarget(Target):
    name: ClassVar[str] = "tensorrt"

    def __init__(self, given: dict[str, str] | None = None) -> None:
        super().__init__(given)
        self.engine = EngineSettings.for_profile(self.settings["device"], self.settings["precision"])

    def check_available(self) -> None:
        if self.settings["build"] == "now" and (missing := tensorrt_missing()) is not None:
            raise BackendUnavailableError(
                f"--build now needs TensorRT and a GPU here: {missing}; use --build auto or defer to write a bundle"
            )

    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        precision = self.engine.precision
        model = traced_and_checked(job)
        with job.steps.step(f"TensorRT-ready graph ({precision}, inlined, folded, op-table check)"):
            ready = tensorrt_ready(model, precision) if precision != "fp32" else None
        with tempfile.TemporaryDirectory(prefix="hiprune-trt-") as scratch:
            with job.steps.step("fp32 TensorRT-ready graph on ONNX Runtime (CPU) against PyTorch"):
                fp32 = tensorrt_ready(model, "fp32")
                fp32_path = stage / MODEL_FILE if ready is None else Path(scratch) / MODEL_FILE
                save_model(fp32, fp32_path)
                parity = check_on_ort(job, fp32_path, REFERENCE_TOLERANCE)
            if not parity.ok:
                raise ExportError(f"the inlined, folded graph disagrees with PyTorch: {parity.describe()}")
        if ready is not None:
            with job.steps.step(f"Writing the {precision} {MODEL_FILE}"):
                save_model(ready, stage / MODEL_FILE)
        bundle_check = self._check_bundle_graph(job, stage / MODEL_FILE)
        write_scripts(stage, self.engine)
        details: dict[str, Any] = {
            "profile": dataclasses.asdict(PROFILES[self.engine.device]),
            "engine_settings": dataclasses.asdict(self.engine),
            "strongly_typed": True,
            "trtexec": "trtexec " + shlex.join(self.engine.trtexec_args()),
            "checks": {"fp32_tensorrt_ready_on_ort": dataclasses.asdict(parity), "bundle_graph_on_ort": bundle_check},
            "engine_built": False,
        }
        if self._build_now():
            with job.steps.step(f"Building the TensorRT engine ({self.engine.device}, {precision})"):
                engine_check = build_and_check(stage, self.engine, job.io, check_input(job))
            details.update(engine_built=True, engine_check=dataclasses.asdict(engine_check))
            return BuildOutput(ENGINE_FILE, details, parity, note=f"Engine built: {engine_check.describe()}")
        note = (
            "TensorRT is not available here, so this is a build bundle: copy the directory to the device and run "
            "./build_engine.sh (trtexec) or `hiprune-export build-engine DIR` there; ./compare.sh checks the engine."
        )
        return BuildOutput(MODEL_FILE, details, parity, note=note)

    def _build_now(self) -> bool:
        mode = self.settings["build"]
        return mode == "now" or (mode == "auto" and tensorrt_missing() is None)

    def _check_bundle_graph(self, job: BuildJob, path: Path) -> dict[str, Any] | str:
        precision = self.engine.precision
        if precision == "fp32":
            return "same graph as the fp32 check"
        if precision == "bf16":
            return "not run: ONNX Runtime's CPU provider has no bf16 kernels; types and op table checked"
        with job.steps.step(f"{precision} graph on ONNX Runtime (CPU) against PyTorch"):
            check = check_on_ort(job, path, TOLERANCES[("tensorrt", precision)])
        if not check.ok:
            raise ExportError(f"the {precision} graph drifts too far from PyTorch on ORT CPU: {check.describe()}")
        return dataclasses.asdict(check)


def write_scripts(directory: Path, engine: EngineSettings) -> None:
    """``build_engine.sh`` (trtexec) and ``compare.sh`` (Polygraphy), with the exact settings of the Python path."""
    tolerance = TOLERANCES[("tensorrt", engine.precision)]
    header = (
        "#!/usr/bin/env bash\n"
        f"# Generated by hiprune-export {__version__} for device profile '{engine.device}' "
        f"({PROFILES[engine.device].tensorrt}), precision {engine.precision}, strongly typed.\n"
        "# Engines are specific to the GPU and TensorRT version that build them: run this on the target device.\n"
        'set -euo pipefail\ncd "$(dirname "$0")"\n'
    )
    build = header + (
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"\n'
        f'"$TRTEXEC" {shlex.join(engine.trtexec_args())} "$@" 2>&1 | tee {BUILD_LOG}\n'
    )
    compare_args = [
        "run",
        MODEL_FILE,
        "--trt",
        "--onnxrt",
        *engine.polygraphy_args(),
        "--val-range",
        f"{PIXEL_VALUES}:[-2,2]",
        "--atol",
        f"{IMAGE_EMBEDS}:{tolerance.atol}",
        f"{INDICES}:0",
        "--rtol",
        f"{IMAGE_EMBEDS}:{tolerance.atol}",
        f"{INDICES}:0",
    ]
    compare = header + (
        "# Builds the engine in memory and compares it with ONNX Runtime on the same random input.\n"
        "# At fp16/bf16 a few near-tie tokens may legitimately swap; indices are compared exactly here.\n"
        f'polygraphy {shlex.join(compare_args)} "$@"\n'
    )
    for name, text in (("build_engine.sh", build), ("compare.sh", compare)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)


def build_engine(onnx_path: Path, engine_path: Path, engine: EngineSettings, log_path: Path) -> None:
    """Builds a strongly typed engine from ``onnx_path`` through Polygraphy's loaders (TensorRT's Python API)."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, SaveEngine
    from polygraphy.logger import G_LOGGER

    G_LOGGER.log_file = str(log_path)
    cache = engine_path.with_name(TIMING_CACHE)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    config = CreateConfig(
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: engine.workspace_mib << 20},
        builder_optimization_level=engine.builder_optimization_level,
        load_timing_cache=str(cache) if cache.exists() else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
    )
    SaveEngine(EngineFromNetwork(network, config=config, save_timing_cache=str(cache)), str(engine_path))()


def build_and_check(
    directory: Path, engine: EngineSettings, io: IOContract, pixel_values: np.ndarray | None = None
) -> Comparison:
    """Builds ``model.engine`` in ``directory`` and compares it once with ONNX Runtime on the bundle's graph
    (on ``pixel_values``, or a seeded random input of the contract's shape)."""
    from hiprune.runtime.runners import OrtRunner
    from hiprune.runtime.tensorrt_runner import TrtEngineRunner

    if pixel_values is None:
        pixel_values = np.random.default_rng(1).standard_normal(io.pixel_values.shape, dtype=np.float32)
    build_engine(directory / MODEL_FILE, directory / ENGINE_FILE, engine, directory / BUILD_LOG)
    with (
        OrtRunner(directory / MODEL_FILE, contract=io) as ort_runner,
        TrtEngineRunner(directory / ENGINE_FILE) as trt_runner,
    ):
        want = ort_runner.infer(io.feed(pixel_values))
        got = trt_runner.infer(io.feed(pixel_values))
    return compare_outputs(want, got, TOLERANCES[("tensorrt", engine.precision)])


def build_engine_from_bundle(directory: Path) -> Comparison:
    """``hiprune-export build-engine DIR``: the same build as the export's Python path, on the device."""
    if not (directory / MANIFEST).is_file() or not (directory / MODEL_FILE).is_file():
        raise ConfigError(
            f"{directory} is not a TensorRT bundle (no manifest.json / {MODEL_FILE}); "
            "pass the directory `hiprune-export --target tensorrt` wrote"
        )
    manifest = read_manifest(directory)
    if manifest.get("target") != "tensorrt":
        raise ConfigError(f"{directory} was exported for --target {manifest.get('target')}, not tensorrt")
    if (missing := tensorrt_missing()) is not None:
        raise BackendUnavailableError(f"cannot build the engine here: {missing}")
    engine = EngineSettings(**manifest["target_details"]["engine_settings"])
    check = build_and_check(directory, engine, IOContract.from_manifest(manifest))
    manifest["target_details"].update(engine_built=True, engine_check=dataclasses.asdict(check))
    manifest["artifact"] = ENGINE_FILE
    write_manifest(directory, manifest)
    return check
