"""Encoder runners for the chain: one ``BaseRunner`` per artifact kind, chosen from the artifact's manifest.

``open_runner(directory)`` checks the directory against its ``manifest.json`` and returns the runner for its
``artifact``: ONNX Runtime for ``model.onnx`` (CPU; the TensorRT and CUDA execution providers first when
``--device cuda`` and onnxruntime-gpu has them), Polygraphy's TensorRT runner for ``model.engine``, Core ML for
``model.mlpackage``. ``encoder="torch"`` rebuilds the same :class:`~hiprune.export.encoder.PrunedEncoder` in
PyTorch (eager on CPU; on CUDA fp16 weights under autocast, replayed as a CUDA graph) for machines without a
compiled artifact; ``torch-eager`` skips the graph.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hiprune.artifacts import Verified, verify_artifact
from hiprune.contract import IMAGE_EMBEDS, INDICES, PIXEL_VALUES, IOContract
from hiprune.errors import ArtifactError, BackendUnavailableError, CheckpointError, ConfigError
from hiprune.runtime.runners import BaseRunner, OrtRunner, TensorSpec

ENCODER_CHOICES = ("auto", "torch", "torch-eager")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
VERIFY_CHOICES = ("sizes", "full")  # what open_runner checks against the manifest first


def open_runner(
    artifact_dir: Path | Verified, device: str = "cpu", encoder: str = "auto", verify: str = "sizes"
) -> BaseRunner:
    """The runner for an artifact directory (not yet activated: use it with ``with``), after checking the directory
    against its manifest (``verify``: ``sizes`` or ``full`` for sha256 too; a copy may be truncated). A
    :class:`~hiprune.artifacts.Verified` artifact is used as it is (its manifest is not read again) unless
    ``full`` asks for the sha256 check it did not have."""
    if encoder not in ENCODER_CHOICES:
        raise ConfigError(f"--encoder {encoder!r} is unknown; choose one of {', '.join(ENCODER_CHOICES)}")
    if verify not in VERIFY_CHOICES:
        raise ConfigError(f"verify={verify!r} is unknown; choose one of {', '.join(VERIFY_CHOICES)}")
    verified = verified_artifact(artifact_dir, full=verify == "full")
    directory, manifest = verified.directory, verified.manifest
    if encoder.startswith("torch"):
        return TorchEncoderRunner(manifest, device, cuda_graph=encoder == "torch")
    artifact = directory / manifest["artifact"]
    if not artifact.exists():
        raise ArtifactError(f"artifact {directory}: {manifest['artifact']} is missing; re-export the directory")
    contract = IOContract.from_manifest(manifest)
    if artifact.suffix == ".onnx":
        return OrtRunner(artifact, providers=ort_providers(device, directory), contract=contract)
    if artifact.suffix == ".engine":  # --device rtx engines are TensorRT-RTX's, the others TensorRT's
        from hiprune.runtime.tensorrt_build import TENSORRT, TENSORRT_RTX, engine_runner

        rtx = (manifest.get("target_options") or {}).get("device") == "rtx"
        return engine_runner(artifact, TENSORRT_RTX if rtx else TENSORRT, contract)
    if artifact.suffix == ".mlpackage":
        from hiprune.runtime.coreml_runner import CoreMLRunner

        return CoreMLRunner(artifact, contract=contract)
    raise CheckpointError(f"artifact {directory}: no runner for {artifact.name}; expected .onnx, .engine or .mlpackage")


def verified_artifact(artifact_dir: Path | Verified, full: bool = False) -> Verified:
    """``artifact_dir`` checked against its manifest, or as it is where it was checked already as thoroughly
    (a :class:`Verified` that was only size-checked is hashed again when ``full`` asks for sha256)."""
    if isinstance(artifact_dir, Verified):
        if artifact_dir.full or not full:
            return artifact_dir
        artifact_dir = artifact_dir.directory
    return verify_artifact(Path(artifact_dir), full=full)


def ort_providers(device: str, directory: Path) -> tuple[Any, ...]:
    """CPU, or on ``cuda`` the GPU providers this onnxruntime build has (TensorRT engines cached beside the model)."""
    if device != "cuda":
        return ("CPUExecutionProvider",)
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        cache = directory / ".ort-trt-cache"
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache), "trt_fp16_enable": True}
        chosen.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    return (*chosen, "CPUExecutionProvider")


def hiprune_config_from_manifest(manifest: dict[str, Any]) -> Any:
    """The :class:`HiPruneConfig` an artifact was exported with."""
    from hiprune.config import HiPruneConfig

    fields = {f.name for f in dataclasses.fields(HiPruneConfig)}
    return HiPruneConfig(**{k: v for k, v in manifest["hiprune"].items() if k in fields})


def checkpoint_of(manifest: dict[str, Any]) -> str | None:
    """The checkpoint directory an artifact came from, or ``None`` for the built-in default."""
    from hiprune.export.models import DEFAULT_MODEL_NAME

    source = manifest["source"]
    return None if source.get("source") == DEFAULT_MODEL_NAME else source.get("path", source.get("source"))


class TorchEncoderRunner(BaseRunner):
    """The artifact's encoder rebuilt in PyTorch from its source checkpoint.

    On CUDA the weights are fp16 and the forward runs under fp16 autocast (softmax, layer norms and so the
    selection scores stay fp32), captured once as a CUDA graph unless ``cuda_graph=False``; on CPU it is fp32 eager.
    """

    name: ClassVar[str] = "torch"

    def __init__(
        self, manifest: dict[str, Any], device: str = "cpu", cuda_graph: bool = True, fp16: bool | None = None
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.device = device
        self.cuda_graph = cuda_graph and device == "cuda"
        self.fp16 = device == "cuda" if fp16 is None else fp16
        pixel = IOContract.from_manifest(manifest).pixel_values
        self._spec = TensorSpec(pixel.name, pixel.shape, np.dtype(pixel.dtype))
        self._encoder: Any = None
        self._graph: Any = None

    def activate_impl(self) -> None:
        import torch

        from hiprune.export.models import load_encoder
        from hiprune.runtime.cuda_graph import CudaGraph, capture_failure

        loaded = load_encoder(checkpoint_of(self.manifest), hiprune_config_from_manifest(self.manifest))
        self._encoder = loaded.encoder.to(self.device)
        if self.fp16:
            self._encoder = self._encoder.half()
        if self.cuda_graph:
            try:
                self._graph = CudaGraph(self._forward, (torch.zeros(self._spec.shape, device=self.device),))
            except Exception as exc:  # the same forward, eager: slower, still correct
                self._graph, self.note = None, capture_failure(exc, "encoder")

    def _forward(self, pixel_values: Any) -> tuple[Any, Any]:
        import torch

        # no cast cache: a CUDA graph must not keep casts made while it was captured
        with torch.no_grad(), torch.autocast(self.device, dtype=torch.float16, enabled=self.fp16, cache_enabled=False):
            return self._encoder(pixel_values)

    def deactivate_impl(self) -> None:
        self._encoder, self._graph = None, None

    def input_specs(self) -> list[TensorSpec]:
        return [self._spec]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        embeds, indices = self.infer_torch(torch.from_numpy(feed[PIXEL_VALUES]))
        return {IMAGE_EMBEDS: embeds.float().cpu().numpy(), INDICES: indices.cpu().numpy()}

    def infer_torch(self, pixel_values: Any) -> tuple[Any, Any]:
        """Tensors in, tensors out on the runner's device (no host round trip on CUDA)."""
        if self._graph is not None:
            self._graph.inputs[0].copy_(pixel_values, non_blocking=True)
            embeds, indices = self._graph.replay()
            return embeds.clone(), indices.clone()
        return self._forward(pixel_values.to(self.device))


def require_device(device: str) -> None:
    """Fails early with one line when ``cuda`` is asked for and no GPU is visible."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r} is unknown; choose cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("--device cuda: no CUDA GPU is visible to this process; use --device cpu")
