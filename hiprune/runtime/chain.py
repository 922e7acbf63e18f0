"""The chain: image → preprocessing → encoder artifact → K image tokens spliced into the prompt → prefill → greedy
decode, each stage timed. ``hiprune-run`` is a thin layer over :class:`Chain`; ``hiprune-bench`` times its stages.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hiprune.artifacts import Verified
from hiprune.contract import IMAGE_EMBEDS, IOContract
from hiprune.errors import CheckpointError, ConfigError, one_line
from hiprune.runtime.encoders import checkpoint_of, open_runner, require_device, verified_artifact
from hiprune.runtime.llm.base import LLMRuntime, Timings, check_max_new_tokens, get_llm_runtime
from hiprune.runtime.llm.loading import TextSide, checkpoint_digest, load_language_model
from hiprune.runtime.preprocess import disagreement, load_image_processor, on_device, preprocess, texture_probe

FALLBACK_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"  # LLaVA-1.5's conversation format


@dataclasses.dataclass
class ChainResult:
    """One run: the greedy ids and their text, how many image tokens went in, and what each stage took."""

    generated_ids: list[int]
    text: str
    kept_tokens: int
    prompt_tokens: int
    llm_runtime: str
    device: str
    timings: Timings
    peak_memory_mb: dict[str, float | None]

    def as_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["timings_ms"] = body.pop("timings")
        return body


class Chain:
    """An artifact, its preprocessing, and a language-model runtime, ready to run images (use with ``with``).

    Args:
        artifact_dir: a directory written by ``hiprune-export`` (checked against its manifest first), or one
            :func:`~hiprune.artifacts.verify_artifact` has checked already (its manifest is not read again).
        llm_runtime: a name in :data:`hiprune.runtime.llm.RUNTIMES`.
        device: ``cpu`` or ``cuda`` (the language model's device; ONNX artifacts use GPU providers when present).
        llm: the checkpoint whose language model to use; default: the one the artifact was exported from.
        llm_layers: keep only the first N decoder layers (quick CPU runs of large models).
        encoder: ``auto`` (the artifact's own runtime) or ``torch`` (the same encoder rebuilt in PyTorch).
        runtime_options: keyword arguments for the LLM runtime's constructor (``dtype``: ``--llm-precision``). The
            runtime checks them, and what it cannot run, before the language model's weights load (they load
            only when a runtime asks for them).
        reuse_llm_from: another chain over the same language model (same checkpoint, runtime and device) whose
            loaded runtime and tokenizer this one shares instead of loading its own (budget sweeps).
    """

    runtime: LLMRuntime
    text: TextSide

    def __init__(
        self,
        artifact_dir: Path | Verified,
        llm_runtime: str = "transformers",
        device: str = "cpu",
        llm: Path | None = None,
        llm_layers: int | None = None,
        encoder: str = "auto",
        runtime_options: dict[str, Any] | None = None,
        reuse_llm_from: Chain | None = None,
    ) -> None:
        require_device(device)
        runtime_cls = get_llm_runtime(llm_runtime)
        verified = verified_artifact(artifact_dir)
        self.artifact_dir, self.manifest = verified.directory, verified.manifest
        self.device = device
        self.io = IOContract.from_manifest(self.manifest)
        if self.io.batch != 1:
            raise ConfigError(f"artifact {self.artifact_dir} has batch {self.io.batch}; export it with --batch 1")
        if len(self.io.image_shape) != 3:
            raise ConfigError(
                f"artifact {self.artifact_dir} takes {self.io.image_shape[0]} views per image (LLaVA-NeXT crops); "
                "hiprune-run runs single-view artifacts (LLaVA-1.5 style) so far"
            )
        self.kept = self.io.kept
        checkpoint, digest = self._checkpoint(llm)
        self.processor = load_image_processor(self.artifact_dir, checkpoint_of(self.manifest))
        self._owns_runtime = reuse_llm_from is None
        if reuse_llm_from is not None:
            self.runtime, self.text = self._reuse(reuse_llm_from, checkpoint, runtime_cls)
        else:
            placement, dtype = runtime_cls.model_placement(device)
            lm, self.text = load_language_model(checkpoint, self.artifact_dir, llm_layers, placement, dtype, digest)
            self.runtime = runtime_cls(lm, device, **(runtime_options or {}))
        self.checkpoint = checkpoint
        try:
            self._check_width()
            self.runner = open_runner(verified, device, encoder)
            self.runner.__enter__()
        except BaseException:
            if self._owns_runtime:
                self.runtime.close()
            raise
        self.pixel_device: str | None = None  # where pixel values are made: None = host (numpy)
        self.pixel_processor = self.processor
        self.preprocess_note: str | None = None
        if getattr(self.runner, "device", None) == "cuda":
            self.preprocess_on("cuda")

    def preprocess_on(self, device: str) -> bool:
        """Makes pixel values on ``device`` (where the PyTorch encoder runner reads them) with the processor's
        torchvision backend; chosen by itself for that runner on CUDA. A textured probe image must come out as
        the host processor makes it (:func:`~hiprune.runtime.preprocess.disagreement`), else images stay on the
        host and :attr:`preprocess_note` says why. Returns whether the device is used."""
        if hasattr(self.runner, "infer_torch"):
            twin, why = on_device(self.processor)
        else:
            twin, why = None, f"the {self.runner.name} encoder runner takes host arrays"
        if twin is None:
            self.preprocess_note = f"host preprocessing: {why}"
            return False
        probe, shape = texture_probe(), self.io.pixel_values.shape
        try:
            differs = disagreement(
                preprocess(twin, probe, shape, device).cpu().numpy(), preprocess(self.processor, probe, shape)
            )
        except Exception as exc:
            self.preprocess_note = f"host preprocessing: {type(twin).__name__} on {device} failed ({one_line(exc)})"
            return False
        if differs is not None:
            self.preprocess_note = (
                f"host preprocessing: {type(twin).__name__} on {device} differs from {type(self.processor).__name__} "
                f"({differs})"
            )
            return False
        self.pixel_device, self.pixel_processor, self.preprocess_note = device, twin, None
        return True

    @property
    def preprocess_backend(self) -> str:
        """What preprocesses, and where: e.g. ``CLIPImageProcessor on cuda``, ``CLIPImageProcessorPil on host``."""
        return f"{type(self.pixel_processor).__name__} on {self.pixel_device or 'host'}"

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the encoder runner, and the language-model runtime unless another chain lent it."""
        if self.runner.active:
            self.runner.__exit__(None, None, None)
        if self._owns_runtime:
            self.runtime.close()

    def _checkpoint(self, llm: Path | None) -> tuple[str | None, str | None]:
        """The language model's checkpoint, and its weights digest where comparing ``--llm`` with the recorded one
        computed it (the runtime caches are keyed by it); ``--llm`` must be the checkpoint the artifact was
        exported from."""
        exported = checkpoint_of(self.manifest)
        if llm is None:
            if exported is not None and not (Path(exported) / "config.json").is_file():
                raise CheckpointError(
                    f"artifact {self.artifact_dir} was exported from {exported}, which is not here; "
                    "pass --llm DIR with that checkpoint"
                )
            return exported, None
        llm = Path(llm)
        if not (llm / "config.json").is_file():
            raise CheckpointError(f"--llm {llm}: no config.json there; pass the checkpoint directory")
        recorded = self.manifest.get("language_model", {}).get("checkpoint_digest")
        digest = checkpoint_digest(llm) if recorded else None
        same = recorded == digest if recorded else (exported is not None and Path(exported).resolve() == llm.resolve())
        if not same:
            source = self.manifest["source"]["source"]
            raise CheckpointError(
                f"--llm {llm} is not the checkpoint artifact {self.artifact_dir} was exported from ({source}); "
                "pass that checkpoint, or re-export the artifact from this one"
            )
        return str(llm), digest

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``pixel_values``'s static shape (1, 3, H, W)."""
        return self.io.pixel_values.shape

    def _reuse(self, other: Chain, checkpoint: str | None, runtime_cls: type[LLMRuntime]) -> tuple[LLMRuntime, Any]:
        if (other.checkpoint, other.device, type(other.runtime)) != (checkpoint, self.device, runtime_cls):
            raise ConfigError(
                "reuse_llm_from: the other chain runs another language model, runtime or device; load a new one"
            )
        return other.runtime, other.text

    def _check_width(self) -> None:
        width = self.io.embed_dim
        if width != self.runtime.embed_dim:
            raise CheckpointError(
                f"artifact {self.artifact_dir} gives {width}-wide image tokens but the language model takes "
                f"{self.runtime.embed_dim}; pass --llm with the checkpoint the artifact was exported from"
            )

    def preprocess(self, image: Any) -> Any:
        """A path, PIL image or (H, W, 3) array → ``pixel_values`` (1, 3, H, W) float32: a numpy array, or a
        tensor on :attr:`pixel_device` when the encoder reads it from there."""
        return preprocess(self.pixel_processor, image, self.io.pixel_values.shape, self.pixel_device)

    def encode(self, pixel_values: Any) -> Any:
        """``pixel_values`` → (1, K, D) image tokens as a torch tensor (on the device for the torch runner)."""
        import torch

        if hasattr(self.runner, "infer_torch"):
            return self.runner.infer_torch(torch.as_tensor(pixel_values))[0]
        return torch.from_numpy(np.asarray(self.runner.infer(self.io.feed(pixel_values))[IMAGE_EMBEDS]))

    def prompt_ids(self, prompt: str) -> list[int]:
        """The formatted prompt's token ids, with exactly one image token."""
        return format_prompt_ids(self.text, prompt)

    def splice(self, prompt: str, image_embeds: Any) -> Any:
        """(1, T, D) embeddings: the prompt's text embeddings with its image token replaced by the K image tokens."""
        import torch

        ids = self.prompt_ids(prompt)
        at = ids.index(self.text.image_token_id)
        before = self.runtime.embed(torch.tensor([ids[:at]], dtype=torch.long))
        after = self.runtime.embed(torch.tensor([ids[at + 1 :]], dtype=torch.long))
        image = image_embeds.to(device=before.device, dtype=before.dtype)
        return torch.cat([before, image, after], dim=1)

    def run(self, image: Any, prompt: str, max_new_tokens: int = 16) -> ChainResult:
        """The whole chain once, stage by stage, synchronizing the device between stages for honest timings."""
        check_max_new_tokens(max_new_tokens)
        sync = self.runtime.synchronize
        marks = [time.perf_counter()]
        pixel_values = self.preprocess(image)
        sync()  # on the GPU path the resize is still queued
        marks.append(time.perf_counter())
        image_embeds = self.encode(pixel_values)
        sync()
        marks.append(time.perf_counter())
        embeds = self.splice(prompt, image_embeds)
        sync()
        marks.append(time.perf_counter())
        prefill = self.runtime.prefill(embeds)
        marks.append(time.perf_counter())
        ids = self.runtime.decode(prefill, max_new_tokens)
        sync()
        marks.append(time.perf_counter())
        ms = [1000 * (b - a) for a, b in zip(marks, marks[1:], strict=False)]
        per_token = ms[4] / (len(ids) - 1) if len(ids) > 1 else None
        timings = Timings(ms[0], ms[1], ms[2], ms[3], sum(ms[:4]), per_token)
        text = self.text.tokenizer.decode(ids, skip_special_tokens=True)
        return ChainResult(
            ids,
            text,
            int(image_embeds.shape[1]),
            int(embeds.shape[1]),
            self.runtime.name,
            self.device,
            timings,
            peak_memory_mb(self.device),
        )


def format_prompt_ids(text: TextSide, prompt: str) -> list[int]:
    """The chat template's rendering when the checkpoint has one, else LLaVA-1.5's format; tokenized."""
    tokenizer = text.tokenizer
    image_token = tokenizer.convert_ids_to_tokens(text.image_token_id)
    if image_token in prompt:
        raise ConfigError(f"--prompt contains {image_token!r}; leave it out, the chain inserts the image itself")
    if text.chat_template:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        rendered = tokenizer.apply_chat_template(
            conversation, chat_template=text.chat_template, tokenize=False, add_generation_prompt=True
        )
    else:
        rendered = FALLBACK_TEMPLATE.format(image=image_token, prompt=prompt)
    has_bos = tokenizer.bos_token is not None and rendered.startswith(tokenizer.bos_token)
    ids = list(tokenizer(rendered, add_special_tokens=not has_bos)["input_ids"])
    if ids.count(text.image_token_id) != 1:
        raise ConfigError(
            f"the formatted prompt holds {ids.count(text.image_token_id)} image tokens, not 1; "
            "the checkpoint's chat template must place exactly one image"
        )
    return ids


def peak_memory_mb(device: str) -> dict[str, float | None]:
    """Peak resident memory of this process, and the peak CUDA allocation when running on CUDA."""
    rss = None
    try:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    except ImportError:  # Windows
        pass
    cuda = None
    if device == "cuda":
        import torch

        cuda = torch.cuda.max_memory_allocated() / 2**20
    return {"host_rss": rss, "cuda_allocated": cuda}
