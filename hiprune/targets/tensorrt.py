"""``--target tensorrt``: a strongly typed TensorRT engine, or a bundle that builds it on the device.

The graph is the spine's, made parser-ready (Select inlined, constants folded, checked against TensorRT's
op table) in the requested precision: fp16 by default as a *strongly typed* network, with the selection,
its score chains and layernorms kept fp32 (``hiprune.graphs.precision``). Where TensorRT-RTX is installed its
ONNX parser and builder judge the written graph (they need no GPU), so a bundle's ``model.onnx`` is one a real
TensorRT has just built. ``--device rtx`` keeps that TensorRT-RTX engine as ``model.engine``; the other devices
build with TensorRT proper where it and a GPU are here, and otherwise write a bundle: ``model.onnx``,
``build_engine.sh`` (trtexec, same settings), ``compare.sh`` (Polygraphy runs, hiprune's comparison judges) and
``manifest.json``, which ``hiprune-export build-engine DIR`` reads on the device.
"""

from __future__ import annotations

import dataclasses
import shlex
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from hiprune import __version__
from hiprune.backends import jetson_model, tensorrt_missing, tensorrt_rtx_missing, tensorrt_rtx_runtime_missing
from hiprune.contract import PIXEL_VALUES
from hiprune.errors import BackendUnavailableError, ExportError
from hiprune.graphs.pipelines import tensorrt_ready
from hiprune.runtime.compare import CHECK_SEED, TOLERANCES, Comparison
from hiprune.runtime.tensorrt_build import (
    CHECK_REFERENCE,
    ENGINE_FILE,
    MODEL_FILE,
    REFERENCE_PRECISIONS,
    TENSORRT_RTX,
    TIMING_CACHE,
    EngineSettings,
    check_engine,
    require_agreement,
    save_check_reference,
)
from hiprune.targets.base import BuildJob, BuildOutput, Target
from hiprune.targets.spine import (
    REFERENCE_TOLERANCE,
    check_on_ort,
    reference_outputs,
    save_model,
    traced_and_checked,
)

BUILD_LOG = "build.log"
ENGINE_OUTPUTS = "engine_outputs.json"  # compare.sh: Polygraphy's saved outputs, judged by hiprune's comparison
ORT_OUTPUTS = "ort_outputs.json"
CHECK_INPUT_SCRIPT = "check_input.py"


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Build settings sized for a device class."""

    name: str
    description: str
    workspace_mib: int  # builder scratch memory pool; Jetson shares it with the CPU
    builder_optimization_level: int  # 0-5; 3 is TensorRT's default, 4-5 search longer for faster engines
    tensorrt: str  # the TensorRT the flags assume
    jetson: str | None = None  # the word in /proc/device-tree/model of the Jetson this profile is for


PROFILES: dict[str, DeviceProfile] = {
    "gpu": DeviceProfile("gpu", "discrete NVIDIA GPU (RTX, datacenter)", 8192, 4, "TensorRT 10.x"),
    "jetson-orin": DeviceProfile(
        "jetson-orin", "Jetson AGX / Orin NX / Orin Nano", 2048, 3, "TensorRT 10.3+ (JetPack 6.1 / 6.2)", "orin"
    ),
    "jetson-thor": DeviceProfile("jetson-thor", "Jetson AGX Thor", 8192, 4, "TensorRT 10.13+ (JetPack 7)", "thor"),
    "rtx": DeviceProfile(
        "rtx",
        "RTX-class GPU, compute capability 8.0-8.9 or 12.x (engine built ahead of time, any machine)",
        8192,
        3,
        "TensorRT-RTX 1.7+",
    ),
}


def profile_settings(device: str, precision: str) -> EngineSettings:
    """The engine settings of the device profile ``device`` at ``precision``."""
    profile = PROFILES[device]
    return EngineSettings(device, precision, profile.workspace_mib, profile.builder_optimization_level)


def trtexec_args(engine: EngineSettings) -> list[str]:
    return [
        f"--onnx={MODEL_FILE}",
        f"--saveEngine={ENGINE_FILE}",
        "--stronglyTyped",  # precision comes from the graph's types (fp32 island kept)
        f"--memPoolSize=workspace:{engine.workspace_mib}M",
        f"--builderOptimizationLevel={engine.builder_optimization_level}",
        f"--timingCacheFile={TIMING_CACHE}",
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=layers.json",
        "--skipInference",
    ]


def polygraphy_args(engine: EngineSettings) -> list[str]:
    return [
        "--strongly-typed",
        "--pool-limit",
        f"workspace:{engine.workspace_mib}M",
        "--builder-optimization-level",
        str(engine.builder_optimization_level),
    ]


class TensorRTTarget(Target):
    name: ClassVar[str] = "tensorrt"

    def __init__(self, given: dict[str, str] | None = None) -> None:
        super().__init__(given)
        self.engine = profile_settings(self.settings["device"], self.settings["precision"])

    def check_available(self) -> None:
        if self.settings["build"] == "now" and (missing := self._build_missing()) is not None:
            raise BackendUnavailableError(
                f"--build now needs {self._builder_words()} here: {missing}; use --build auto or defer to write a "
                "bundle"
            )

    def _builder_words(self) -> str:
        return "TensorRT-RTX" if self.engine.backend == TENSORRT_RTX else "TensorRT and a GPU"

    def _build_missing(self) -> str | None:
        """Why this device's engine cannot be built here, or None."""
        if self.engine.backend == TENSORRT_RTX:
            return tensorrt_rtx_missing()
        if (missing := tensorrt_missing()) is not None:
            return missing
        jetson = PROFILES[self.engine.device].jetson
        if jetson is not None and jetson not in (jetson_model() or "").lower():
            return f"this machine is not a Jetson {jetson.title()} (an engine built here would not run there)"
        return None

    def build(self, job: BuildJob, stage: Path) -> BuildOutput:
        precision = self.engine.precision
        model = traced_and_checked(job)
        with job.steps.step(f"TensorRT-ready graph ({precision}, inlined, folded, op-table check)"):
            table: list[str] = []
            ready = tensorrt_ready(model, precision, op_table_findings=table if self._parser_here() else None)
        twin = self._fp32_twin_check(job, model, stage if precision == "fp32" else None)
        del model
        if precision != "fp32":
            with job.steps.step(f"Writing the {precision} {MODEL_FILE}"):
                save_model(ready, stage / MODEL_FILE)
        del ready
        written, label = self._written_graph_check(job, stage / MODEL_FILE, twin)
        if precision in REFERENCE_PRECISIONS:
            self._write_check_reference(job, stage / CHECK_REFERENCE)
        details: dict[str, Any] = {
            "profile": dataclasses.asdict(PROFILES[self.engine.device]),
            "engine_settings": dataclasses.asdict(self.engine),
            "strongly_typed": True,
            "checks": {"fp32_tensorrt_ready_on_ort": dataclasses.asdict(twin), "written_graph_on_ort": label},
            "op_table": table or "passed",
            "engine_built": False,
        }
        if self.engine.device != "rtx":
            write_scripts(stage, self.engine)
            details["trtexec"] = "trtexec " + shlex.join(trtexec_args(self.engine))
        note = self._engines(job, stage, details)
        return BuildOutput(details["artifact"], details, written, note=note, comparison_label=label)

    def _parser_here(self) -> bool:
        """Whether a real TensorRT parser will judge the written graph in this export."""
        return tensorrt_rtx_missing() is None or self._build_here()

    def _build_here(self) -> bool:
        """Whether this export builds the engine itself (not deferred, and a builder is here)."""
        return self.settings["build"] != "defer" and self._build_missing() is None

    def _fp32_twin_check(self, job: BuildJob, model: Any, stage: Path | None) -> Comparison:
        """The fp32 TensorRT-ready graph on ORT vs PyTorch: the inlining and folding change nothing."""
        with job.steps.step("fp32 TensorRT-ready graph on ONNX Runtime (CPU) against PyTorch"):
            fp32 = tensorrt_ready(model, "fp32")
            with tempfile.TemporaryDirectory(prefix="hiprune-trt-") as scratch:
                path = (stage or Path(scratch)) / MODEL_FILE
                save_model(fp32, path)
                parity = check_on_ort(job, path, REFERENCE_TOLERANCE)
        if not parity.ok:
            raise ExportError(f"the inlined, folded graph disagrees with PyTorch: {parity.describe()}")
        return parity

    def _written_graph_check(self, job: BuildJob, path: Path, twin: Comparison) -> tuple[Comparison, str]:
        """The check of the graph that ships (fp16 by default), which the summary and manifest report."""
        precision = self.engine.precision
        if precision == "fp32":
            return twin, "check vs PyTorch (fp32 graph, ORT CPU)"
        if precision == "bf16":
            return twin, "check vs PyTorch (fp32 twin: ORT CPU has no bf16 kernels)"
        with job.steps.step(f"{precision} graph on ONNX Runtime (CPU) against PyTorch"):
            check = check_on_ort(job, path, TOLERANCES[("tensorrt", precision)])
        if not check.ok:
            raise ExportError(f"the {precision} graph drifts too far from PyTorch on ORT CPU: {check.describe()}")
        return check, f"check vs PyTorch ({precision} graph, ORT CPU)"

    def _write_check_reference(self, job: BuildJob, path: Path) -> None:
        """The fp32 module's outputs on the check input (the export's own reference: the engine check draws the
        same pixels), which a bf16 engine is checked against (``build-engine``, ``--build now``, ``compare.sh``):
        ONNX Runtime's CPU provider cannot run the graph."""
        pixel_values, reference = reference_outputs(job)
        save_check_reference(path, job.io.feed(pixel_values), reference)

    def _engines(self, job: BuildJob, stage: Path, details: dict[str, Any]) -> str:
        """The real parser's verdict on the written graph, and the engine where one is built here."""
        details["artifact"] = MODEL_FILE
        if self._build_here():
            return self._build_engine(job, stage, details)
        if tensorrt_rtx_missing() is None:
            with job.steps.step(f"TensorRT-RTX parser + strongly typed build of {MODEL_FILE} (verdict only)"):
                verdict = self.engine.build(stage / MODEL_FILE, backend=TENSORRT_RTX)
            details["parser"] = dataclasses.asdict(verdict)
        else:
            details["parser"] = f"not run: {tensorrt_rtx_missing()}; op table only"
        if self.engine.device == "rtx":
            return (
                f"Bundle only: {self._build_missing() or '--build defer'}. "
                f"Run `hiprune-export build-engine DIR` where tensorrt-rtx is installed (any machine)."
            )
        why = self._build_missing() or "--build defer"
        return (
            f"Build bundle ({why}): copy the directory to the device and run ./build_engine.sh (trtexec) or "
            "`hiprune-export build-engine DIR` there; ./compare.sh checks the engine."
        )

    def _build_engine(self, job: BuildJob, stage: Path, details: dict[str, Any]) -> str:
        """Builds ``model.engine`` with this device's TensorRT, then checks it against ORT where it can run."""
        backend = self.engine.backend
        with job.steps.step(f"Building {ENGINE_FILE} with {backend} ({self.engine.device}, {self.engine.precision})"):
            info = self.engine.build(stage / MODEL_FILE, engine_path=stage / ENGINE_FILE)
        details.update(artifact=ENGINE_FILE, engine_built=True, engine_build=dataclasses.asdict(info))
        details["parser"] = dataclasses.asdict(info)
        if info.compute_capabilities:
            details["compute_capabilities"] = info.compute_capabilities
        run_missing = tensorrt_rtx_runtime_missing() if backend == TENSORRT_RTX else None
        if run_missing is not None:
            details["engine_check"] = f"not run: {run_missing}"
            return f"Engine built by {info.backend} ({info.layers} layers); not run here: {run_missing}"
        with job.steps.step(f"{ENGINE_FILE} against its reference, seed {CHECK_SEED}"):
            check = check_engine(stage / MODEL_FILE, stage / ENGINE_FILE, backend, self.engine.precision, job.io)
        details["engine_check"] = dataclasses.asdict(check)
        require_agreement(check)
        return f"Engine built by {info.backend}; {check.describe()}"


def write_scripts(directory: Path, engine: EngineSettings) -> None:
    """``build_engine.sh`` (trtexec) and ``compare.sh`` (Polygraphy), with the exact settings of the Python path."""
    header = (
        "#!/usr/bin/env bash\n"
        f"# Generated by hiprune-export {__version__} for device profile '{engine.device}' "
        f"({PROFILES[engine.device].tensorrt}), precision {engine.precision}, strongly typed.\n"
        "# Engines are specific to the GPU and TensorRT version that build them: run this on the target device.\n"
        'set -euo pipefail\ncd "$(dirname "$0")"\n'
    )
    build = header + (
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"\n'
        f'"$TRTEXEC" {shlex.join(trtexec_args(engine))} "$@" 2>&1 | tee {BUILD_LOG}\n'
    )
    data = ["--data-loader-script", f"{CHECK_INPUT_SCRIPT}:load_data"]
    engine_run = ["run", MODEL_FILE, "--trt", *polygraphy_args(engine), *data, "--save-outputs", ENGINE_OUTPUTS]
    if engine.precision in REFERENCE_PRECISIONS:
        reference, reference_run = CHECK_REFERENCE, ""
        said = f"the fp32 PyTorch outputs in {CHECK_REFERENCE} (ORT has no bf16 CPU kernels)"
    else:
        reference = ORT_OUTPUTS
        ort_run = ["run", MODEL_FILE, "--onnxrt", *data, "--save-outputs", ORT_OUTPUTS]
        reference_run = f"polygraphy {shlex.join(ort_run)}\n"
        said = "ONNX Runtime's outputs on the same graph"
    judge = ["-m", "hiprune.runtime.tensorrt_build", ENGINE_OUTPUTS, reference, engine.precision]
    compare = header + (
        "# Builds the engine in memory with Polygraphy and saves its outputs on the Python check's input\n"
        f"# ({CHECK_INPUT_SCRIPT}: seeded standard-normal {PIXEL_VALUES}); hiprune-export's own comparison and\n"
        "# tolerance (those of `hiprune-export build-engine`) then judge them against\n"
        f"# {said}.\n"
        "# Needs: pip install polygraphy onnxruntime hiprune-export\n"
        f'polygraphy {shlex.join(engine_run)} "$@"\n{reference_run}'
        f'"${{PYTHON:-python3}}" {shlex.join(judge)}\n'
    )
    loader = (
        f'"""The input of hiprune-export\'s engine check, for compare.sh (polygraphy --data-loader-script)."""\n'
        "import json\n\nimport numpy as np\n\n\ndef load_data():\n"
        f'    shape = json.load(open("manifest.json"))["inputs"]["{PIXEL_VALUES}"]["shape"]\n'
        f"    rng = np.random.default_rng({CHECK_SEED})\n"
        f'    yield {{"{PIXEL_VALUES}": rng.standard_normal(shape, dtype=np.float32)}}\n'
    )
    (directory / CHECK_INPUT_SCRIPT).write_text(loader)
    for name, text in (("build_engine.sh", build), ("compare.sh", compare)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
