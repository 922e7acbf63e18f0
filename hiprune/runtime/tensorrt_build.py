"""Parse and build engines with TensorRT's Python API: ``tensorrt`` (datacenter, Jetson) or ``tensorrt_rtx``.

Both packages expose the same network-definition API (``Builder``, strongly typed networks, ``OnnxParser``,
``build_serialized_network``), so one code path serves both; what CI proves with TensorRT-RTX (which parses and
builds without a GPU) is the path TensorRT proper takes on the device. Neither torch nor transformers is imported
here: ``hiprune-export build-engine`` runs on devices that have neither.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hiprune.artifacts import MANIFEST, sha256_file, verify_artifact, write_manifest
from hiprune.contract import IMAGE_EMBEDS, INDICES, PIXEL_VALUES, IOContract
from hiprune.errors import ArtifactError, BackendUnavailableError, ConfigError, ExportError
from hiprune.runtime.compare import TOLERANCES, Comparison, check_input, compare_outputs
from hiprune.runtime.runners import BaseRunner, OrtRunner

TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt_rtx"
# TensorRT-RTX targets (Ampere to Blackwell RTX); its runtime refuses others (Hopper 9.0 among them).
RTX_COMPUTE_CAPABILITIES = ("SM80", "SM86", "SM89", "SM120", "SM121")
MAX_MESSAGES = 3
MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
TIMING_CACHE = "timing.cache"
CHECK_REFERENCE = "check_reference.npz"  # bf16 bundles: the fp32 module's outputs on the check input
REFERENCE_PRECISIONS = ("bf16",)  # graphs ONNX Runtime's CPU provider cannot run (no bf16 kernels)
BUILD_INPUTS = (MODEL_FILE, f"{MODEL_FILE}.data", CHECK_REFERENCE)  # what build-engine reads from a bundle


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Everything an engine build depends on: chosen from a device profile at export, recorded in the manifest
    (``target_details.engine_settings``) and read back from it by ``build-engine``; the bundle's scripts render
    the same settings as trtexec flags and Polygraphy loader args."""

    device: str
    precision: str
    workspace_mib: int
    builder_optimization_level: int

    @property
    def backend(self) -> str:
        return TENSORRT_RTX if self.device == "rtx" else TENSORRT

    def build(self, onnx_path: Path, engine_path: Path | None = None, backend: str | None = None) -> EngineBuild:
        """Parses and builds ``onnx_path`` with these settings (by default with this device's TensorRT); TensorRT
        proper reads and updates ``timing.cache`` beside ``engine_path``."""
        backend = backend or self.backend
        cache = engine_path.with_name(TIMING_CACHE) if engine_path is not None and backend == TENSORRT else None
        level = self.builder_optimization_level
        return build_serialized(onnx_path, backend, self.workspace_mib, level, cache, engine_path)


@dataclasses.dataclass(frozen=True)
class EngineBuild:
    """What a build produced, for the manifest."""

    backend: str  # package and version, e.g. "tensorrt_rtx 1.7.1.116"
    layers: int  # network layers after parsing
    engine_bytes: int
    seconds: float  # parse + build
    compute_capabilities: list[str] | None = None  # TensorRT-RTX only: the GPUs the engine may run on


def import_backend(name: str) -> ModuleType:
    """The TensorRT package ``name``; a missing one is a one-line :class:`BackendUnavailableError`."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        hint = "pip install tensorrt-rtx" if name == TENSORRT_RTX else "install TensorRT (JetPack, or NVIDIA's index)"
        raise BackendUnavailableError(f"{name} cannot be imported ({exc}); {hint}") from None


def capturing_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps errors (to put in our one-line messages) and drops the rest."""

    class Logger(trt.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(" ".join(msg.split()))

    return Logger()


def _joined(messages: list[str]) -> str:
    more = len(messages) - MAX_MESSAGES
    return "; ".join(messages[:MAX_MESSAGES]) + (f" (+{more} more)" if more > 0 else "")


def parse_network(trt: ModuleType, logger: Any, onnx_path: Path) -> tuple[Any, Any, Any]:
    """(builder, strongly typed network, parser) for ``onnx_path``; the parser's own errors on rejection."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise ExportError(f"{_name(trt)} ONNX parser rejects {onnx_path.name}: {_joined(errors or logger.errors)}")
    return builder, network, parser


def build_serialized(
    onnx_path: Path,
    backend: str,
    workspace_mib: int,
    optimization_level: int,
    timing_cache: Path | None = None,
    engine_path: Path | None = None,
) -> EngineBuild:
    """Parses and builds ``onnx_path`` as a strongly typed engine, written to ``engine_path`` if given.

    Fails with the parser's or the builder's own words. Without ``engine_path`` the build is a verdict only.
    """
    trt = import_backend(backend)
    logger = capturing_logger(trt)
    start = time.perf_counter()
    builder, network, parser = parse_network(trt, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = optimization_level
    capabilities = list(RTX_COMPUTE_CAPABILITIES) if backend == TENSORRT_RTX else None
    for slot, name in enumerate(capabilities or ()):
        config.num_compute_capabilities = len(capabilities or ())
        config.set_compute_capability(getattr(trt.ComputeCapability, name), slot)
    cache = _attach_timing_cache(config, timing_cache)
    layers = network.num_layers
    serialized = builder.build_serialized_network(network, config)
    del parser, network  # the parsed weights: before the engine's bytes are touched
    if serialized is None:
        raise ExportError(f"{_name(trt)} failed to build {onnx_path.name}: {_joined(logger.errors) or 'no message'}")
    if cache is not None and timing_cache is not None:
        timing_cache.write_bytes(memoryview(cache.serialize()))
    if engine_path is not None:
        engine_path.write_bytes(memoryview(serialized))
    return EngineBuild(
        backend=_name(trt),
        layers=layers,
        engine_bytes=serialized.nbytes,
        seconds=round(time.perf_counter() - start, 2),
        compute_capabilities=[_dotted(c) for c in capabilities] if capabilities else None,
    )


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _name(trt: ModuleType) -> str:
    return f"{trt.__name__} {getattr(trt, '__version__', '?')}"


def _dotted(capability: str) -> str:
    digits = capability.removeprefix("SM")
    return f"{digits[:-1]}.{digits[-1]}"


def gpu_missing(backend: str) -> str | None:
    """Asks TensorRT itself whether it has a GPU to build for (not torch: a PyPI torch on a Jetson sees none).

    ``tensorrt``: its ``Builder`` cannot start without a usable CUDA GPU. ``tensorrt_rtx`` builds anywhere, so
    the question is whether its *runtime* can run here: a one-layer engine is built for the current GPU and
    deserialized (the runtime refuses GPUs outside its compute capabilities, e.g. Hopper).
    """
    try:
        trt = import_backend(backend)
    except BackendUnavailableError as exc:
        return str(exc)
    logger = capturing_logger(trt)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError):
        builder = None
    if builder is None:
        return f"{_name(trt)} finds no usable CUDA GPU here ({_joined(logger.errors) or 'its Builder cannot start'})"
    if backend != TENSORRT_RTX:
        return None
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    probe = network.add_input("probe", trt.float32, (1,))
    network.mark_output(network.add_identity(probe).get_output(0))
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.CURRENT, 0)
    serialized = builder.build_serialized_network(network, config)
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized) if serialized is not None else None
    if engine is None:
        return f"{_name(trt)} cannot run engines on this machine ({_joined(logger.errors) or 'no message'})"
    return None


def engine_runner(engine_path: Path, backend: str, io: IOContract | None = None) -> BaseRunner:
    """The runner for an engine built by ``backend``."""
    if backend == TENSORRT_RTX:
        from hiprune.runtime.tensorrt_rtx_runner import TrtRtxEngineRunner

        return TrtRtxEngineRunner(engine_path, io)
    from hiprune.runtime.tensorrt_runner import TrtEngineRunner

    return TrtEngineRunner(engine_path, io)


def save_check_reference(path: Path, feed: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    """Writes the check input and the fp32 module's outputs on it (``check_reference.npz``)."""
    arrays: dict[str, Any] = {**feed, **outputs}  # Any: numpy's stub types **kwds as its own flags
    np.savez(path, **arrays)


def load_check_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(feed, reference outputs) from ``check_reference.npz``; a missing file is a one-line error."""
    if not path.is_file():
        raise ArtifactError(
            f"{path} is missing: ONNX Runtime's CPU provider has no bf16 kernels, so a bf16 engine is checked "
            "against the fp32 outputs the export records there; re-export the bundle with this hiprune-export"
        )
    with np.load(path) as saved:
        return {PIXEL_VALUES: saved[PIXEL_VALUES]}, {name: saved[name] for name in (IMAGE_EMBEDS, INDICES)}


def check_engine(
    onnx_path: Path, engine_path: Path, backend: str, precision: str, io: IOContract | None = None
) -> Comparison:
    """The engine against a reference on the check input, with the target's tolerance for ``precision``.

    The reference is ONNX Runtime (CPU) on the same graph; for bf16, which ONNX Runtime's CPU provider cannot
    run, it is the fp32 module's outputs the export recorded beside the graph (``check_reference.npz``).
    """
    tolerance = TOLERANCES[("tensorrt", precision)]
    if precision in REFERENCE_PRECISIONS:
        feed, want = load_check_reference(onnx_path.with_name(CHECK_REFERENCE))
        with engine_runner(engine_path, backend, io) as engine:
            got = engine.infer(feed)
        return compare_outputs(want, got, tolerance, what=f"{engine_path.name} vs PyTorch fp32 ({CHECK_REFERENCE})")
    with OrtRunner(onnx_path, contract=io) as ort_runner, engine_runner(engine_path, backend, io) as engine:
        spec = next(s for s in ort_runner.input_specs() if s.name == PIXEL_VALUES)
        feed = {PIXEL_VALUES: check_input(spec.shape)}
        want, got = ort_runner.infer(feed), engine.infer(feed)
    return compare_outputs(want, got, tolerance, what=f"{engine_path.name} vs {onnx_path.name} on ONNX Runtime CPU")


def require_agreement(check: Comparison) -> None:
    """An engine that disagrees with its reference beyond the tolerance is an error, never a note."""
    if not check.ok:
        raise ExportError(f"the engine disagrees with its reference beyond the tolerance: {check.describe()}")


def judge_saved_outputs(engine_outputs: Path, reference: Path, precision: str) -> Comparison:
    """``compare.sh``'s verdict: the engine's saved outputs against the reference's, judged by
    :func:`compare_outputs` with the target's tolerance (the one comparison every check uses).

    Each side is a Polygraphy ``--save-outputs`` file (one runner, one iteration) or ``check_reference.npz``.
    """
    what = f"{engine_outputs.name} vs {reference.name}"
    tolerance = TOLERANCES[("tensorrt", precision)]
    return compare_outputs(_saved_outputs(reference), _saved_outputs(engine_outputs), tolerance, what=what)


def _saved_outputs(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        return load_check_reference(path)[1]
    from polygraphy.comparator import RunResults  # compare.sh runs where Polygraphy is installed

    ((_, iterations),) = RunResults.load(str(path)).items()
    return {name: np.asarray(iterations[0][name]) for name in (IMAGE_EMBEDS, INDICES)}


def main(argv: list[str]) -> int:
    """``python -m hiprune.runtime.tensorrt_build ENGINE_OUTPUTS REFERENCE PRECISION`` (compare.sh's last step):
    prints the verdict; exit 1 when the engine fails the tolerance."""
    from hiprune.errors import HiPruneError

    engine_outputs, reference, precision = argv
    try:
        check = judge_saved_outputs(Path(engine_outputs), Path(reference), precision)
    except HiPruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(check.describe())
    return 0 if check.ok else 1


DEFAULT_BUILD = {"workspace_mib": 2048, "builder_optimization_level": 3}


def bundle_settings(directory: Path, manifest: dict[str, Any]) -> EngineSettings:
    """The engine settings a TensorRT bundle's manifest records (older manifests: profile defaults fill gaps)."""
    if manifest.get("target") != "tensorrt":
        raise ConfigError(
            f"{directory} is not a TensorRT bundle (exported for --target {manifest.get('target')}); "
            "pass the directory `hiprune-export --target tensorrt` wrote"
        )
    options = manifest.get("target_options") or {}
    given = (manifest.get("target_details") or {}).get("engine_settings") or {}
    known = {k: given[k] for k in ("workspace_mib", "builder_optimization_level") if k in given}
    precision = given.get("precision", options.get("precision"))
    if precision not in ("fp16", "bf16", "fp32"):
        raise ConfigError(
            f"{directory / MANIFEST} records no usable precision ({precision!r}); re-export the bundle with "
            "hiprune-export --target tensorrt"
        )
    device = given.get("device", options.get("device", "gpu"))
    return EngineSettings(device=device, precision=precision, **{**DEFAULT_BUILD, **known})


def build_engine_from_bundle(directory: Path, full: bool = False) -> tuple[Comparison | None, str | None]:
    """``hiprune-export build-engine DIR``: verify, build, check against ONNX Runtime, then move into the bundle.

    The bundle is first checked against its manifest (sizes, or with ``full`` every sha256) and the files the
    build reads (:data:`BUILD_INPUTS`) against their sha256 whatever ``full`` says: an engine built from a
    corrupted copy would pass its check, run against the same corrupted graph. The engine is built and checked in
    a staging directory inside the bundle; only an engine that passes is moved in and recorded in the manifest,
    so a failure leaves the bundle exactly as it was. Returns the check, or why it could not run here
    (TensorRT-RTX builds without a GPU but runs only on RTX-class GPUs).
    """
    manifest = verify_artifact(directory, full=full, sha256=BUILD_INPUTS).manifest
    settings = bundle_settings(directory, manifest)
    missing = _run_missing(settings.backend)
    if missing is None and settings.precision in REFERENCE_PRECISIONS:
        load_check_reference(directory / CHECK_REFERENCE)  # refused before the build, not after it
    stage = Path(tempfile.mkdtemp(prefix=".build-engine.partial-", dir=directory))
    try:
        if (directory / TIMING_CACHE).is_file():
            shutil.copyfile(directory / TIMING_CACHE, stage / TIMING_CACHE)
        info = settings.build(directory / MODEL_FILE, engine_path=stage / ENGINE_FILE)
        check = None
        if missing is None:
            io = IOContract.from_manifest(manifest)
            check = check_engine(directory / MODEL_FILE, stage / ENGINE_FILE, settings.backend, settings.precision, io)
            require_agreement(check)
        produced = sorted(path.name for path in stage.iterdir())
        for name in produced:
            os.replace(stage / name, directory / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _record_engine(directory, manifest, info, check, missing, produced)
    return check, missing


def _run_missing(backend: str) -> str | None:
    """Raises when ``backend`` cannot build here; returns why its engine cannot *run* here, or None."""
    from hiprune.backends import tensorrt_missing, tensorrt_rtx_missing, tensorrt_rtx_runtime_missing

    if backend == TENSORRT:
        if (missing := tensorrt_missing()) is not None:
            raise BackendUnavailableError(f"cannot build the engine here: {missing}")
        return None
    if (missing := tensorrt_rtx_missing()) is not None:
        raise BackendUnavailableError(f"cannot build the engine here: {missing}")
    return tensorrt_rtx_runtime_missing()


def _record_engine(
    directory: Path,
    manifest: dict[str, Any],
    info: EngineBuild,
    check: Comparison | None,
    missing: str | None,
    produced: list[str],
) -> None:
    """Records the engine in ``manifest`` (the one read before the build); the export's file entries are kept as
    recorded and only ``produced`` is hashed, so a bundle file corrupted since the export still fails ``verify``
    afterwards."""
    files = {name: entry for name, entry in (manifest.get("files") or {}).items() if name not in produced}
    for name in produced:
        files[name] = {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
    details = manifest.setdefault("target_details", {})
    details.update(
        engine_built=True,
        engine_build=dataclasses.asdict(info),
        **({"compute_capabilities": info.compute_capabilities} if info.compute_capabilities else {}),
        engine_check=dataclasses.asdict(check) if check is not None else f"not run: {missing}",
    )
    manifest["artifact"] = ENGINE_FILE
    write_manifest(directory, manifest, files=files)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
