"""The language-model runtime interface the chain drives: embed, prefill from ``inputs_embeds``, greedy decode.

Every runtime is built from the same :class:`LanguageModel` (a float32 causal LM in torch plus a key identifying
its weights), so a runtime that exports or compiles it (ONNX Runtime) can cache the result by that key.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hiprune.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

STAGES = ("preprocess", "encoder", "splice", "prefill", "ttft", "decode_per_token")

RUNTIMES: dict[str, str] = {
    "transformers": "hiprune.runtime.llm.hf:HfLLM",
    "onnxruntime": "hiprune.runtime.llm.ort:OrtLLM",
    "llama.cpp": "hiprune.runtime.llm.llamacpp:LlamaCppLLM",
}


@dataclasses.dataclass
class Timings:
    """Milliseconds per chain stage; ``ttft`` covers preprocess through the first token, ``None`` = not measured."""

    preprocess: float | None = None
    encoder: float | None = None
    splice: float | None = None
    prefill: float | None = None
    ttft: float | None = None
    decode_per_token: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {stage: getattr(self, stage) for stage in STAGES}


class LanguageModel:
    """What every runtime is built from: the torch model, loaded only when a runtime asks for it.

    A runtime that runs an export of the model (ONNX Runtime, llama.cpp) finds it cached by ``key`` and never asks,
    so a device that holds the export needs neither the checkpoint's weights in memory nor the time to load them.

    Args:
        model: a transformers causal LM (``get_input_embeddings()``, ``lm_head``), eval mode, placed where
            :meth:`LLMRuntime.model_placement` asked (float32 on CPU unless a runtime asks otherwise); or ``None``
            with ``loader``, which makes it on first use.
        key: identifies the weights (checkpoint hash, or the default's seed/shape), for caches of exports.
        cache_dir: where a runtime may cache what it derives from ``model`` (beside the encoder artifact).
        eos_token_id: greedy decoding stops after emitting it (``None``: never stops early).
        config: the model's text config (its ``config`` when not given): what is known without the weights.
        loader: makes the model when ``model`` is ``None``.
    """

    def __init__(
        self, model: Any, key: str, cache_dir: Path, eos_token_id: int | None, *, config: Any = None,
        loader: Callable[[], Any] | None = None,
    ) -> None:  # fmt: skip
        if model is None and (config is None or loader is None):
            raise ValueError("LanguageModel needs a model, or its config and a loader")
        self._model, self._loader = model, loader
        self.config = config if config is not None else model.config
        self.key, self.cache_dir, self.eos_token_id = key, Path(cache_dir), eos_token_id

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        """The torch model, loaded now if it was not yet."""
        if self._model is None:
            assert self._loader is not None
            self._model = self._loader()
        return self._model

    def release(self) -> None:
        """Drops the loaded model where the loader can make it again: a runtime that needed it only to write its
        export keeps the export, not the float32 model beside it."""
        if self._loader is not None:
            self._model = None

    def embedding_table(self) -> np.ndarray:
        """The token-embedding matrix (vocab, D) as float32, memory-mapped from ``cache_dir`` (one file per weights
        key, shared by every export of them), written from the model when missing or not of that shape."""
        import numpy as np

        path = self.cache_dir / f"embed-tokens-{hashlib.sha256(self.key.encode()).hexdigest()[:16]}.npy"
        shape = (int(self.config.vocab_size), int(self.config.hidden_size))
        try:
            table = np.load(path, mmap_mode="r")
            if table.shape == shape and table.dtype == np.float32:
                return table
        except (OSError, ValueError):  # missing, truncated or not an array: written again below
            pass
        from hiprune.artifacts import written_atomically

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with written_atomically(path) as temp:
            np.save(temp, self.model.get_input_embeddings().weight.detach().float().cpu().numpy())
        return np.load(path, mmap_mode="r")


@dataclasses.dataclass
class Prefill:
    """The result of a prefill: the greedy first token, its float32 logits and the runtime's own KV state."""

    first_token: int
    logits: torch.Tensor  # (vocab,) float32, last position
    state: Any  # runtime-specific (KV cache, position), opaque to the chain
    length: int  # tokens in the cache after the prefill


class LLMRuntime(abc.ABC):
    """One language-model backend. ``device`` is ``"cpu"`` or ``"cuda"``; ``dtype`` ``None`` = the device default."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("float32", "float16")  # what ``dtype`` (--llm-precision) may be

    def __init__(self, lm: LanguageModel, device: str = "cpu", dtype: str | None = None) -> None:
        self.check_precision(dtype)
        self.lm = lm
        self.device = device
        self.dtype = dtype
        config = lm.config
        self.embed_dim: int = int(config.hidden_size)
        self.vocab_size: int = int(config.vocab_size)
        self.eos_token_id: int | None = lm.eos_token_id
        self.note: str | None = None  # set when a faster path had to fall back (shown by hiprune-run, kept in JSON)

    @classmethod
    def model_placement(cls, device: str) -> tuple[str, str]:
        """Where and in which dtype the chain should load the torch model for this runtime on ``device``.

        The default puts it on the device (float16 on CUDA, float32 on CPU); a runtime that exports the model
        (ONNX Runtime) may ask for ``("cpu", "float32")`` instead.
        """
        return (device, "float16" if device == "cuda" else "float32")

    @classmethod
    def check_precision(cls, precision: str | None) -> None:
        """The one check of ``--llm-precision`` (``dtype``) against :attr:`precisions` (``None``: the default)."""
        if precision is not None and precision not in cls.precisions:
            raise ConfigError(
                f"--llm-precision {precision} is not one the {cls.name} runtime runs; "
                f"choose one of {', '.join(cls.precisions)}"
            )

    @classmethod
    def check_usable(cls, text_config: Any | None) -> None:
        """Refuses in one line, before the language model loads, what this runtime cannot run: a missing library,
        or (given the checkpoint's text ``config``) a model it cannot take. The default runs everything."""
        return None

    def close(self) -> None:
        """Frees what the runtime holds outside Python objects (the chain calls it; the default holds nothing)."""
        return None

    @property
    def precision(self) -> str:
        """What the language model runs at: ``dtype`` when one was asked for, else where the chain loaded it."""
        return self.dtype or type(self).model_placement(self.device)[1]

    @abc.abstractmethod
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(1, T) int64 token ids → (1, T, D) text embeddings on this runtime's device, ready to splice."""

    @abc.abstractmethod
    def prefill(self, inputs_embeds: torch.Tensor) -> Prefill:
        """Runs (1, T, D) embeddings at positions 0..T-1; returns the greedy first token and the KV state."""

    @abc.abstractmethod
    def decode(self, prefill: Prefill, max_new_tokens: int) -> list[int]:
        """Greedy ids starting with ``prefill.first_token``, at most ``max_new_tokens`` (at least 1, as
        :func:`check_max_new_tokens` ensures), ending at EOS (kept)."""

    def synchronize(self) -> None:
        """Waits for queued device work, so wall-clock stage timings are honest (no-op on CPU)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()


def check_max_new_tokens(max_new_tokens: int) -> None:
    """The one check of ``--max-new-tokens``: :meth:`Chain.run <hiprune.runtime.chain.Chain.run>` makes it for
    every caller, and ``hiprune-run`` / ``hiprune-bench`` make it again before anything loads, so bad input
    answers at once; runtimes' ``decode`` trusts it."""
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens} must be at least 1; pass how many tokens to generate")


def check_llm_runtime(runtime: str, precision: str | None) -> None:
    """``--llm-runtime`` and ``--llm-precision`` as ``hiprune-run`` and ``hiprune-bench`` check them before anything
    loads: a registered runtime, a precision it runs, its library installed. (Constructing the runtime checks the
    precision again, and the model it is given.)"""
    cls = get_llm_runtime(runtime)
    cls.check_precision(precision)
    cls.check_usable(None)


def get_llm_runtime(name: str) -> type[LLMRuntime]:
    """The runtime class registered as ``name`` (imported only now)."""
    if name not in RUNTIMES:
        raise ConfigError(f"--llm-runtime {name!r} is unknown; choose one of {', '.join(RUNTIMES)}")
    module, _, attr = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
