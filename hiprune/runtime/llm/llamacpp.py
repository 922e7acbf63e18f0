"""The ``llama.cpp`` language-model runtime: the checkpoint's decoder as GGUF, driven through llama.cpp's C API.

llama-cpp-python's high-level ``Llama`` class takes token ids only; its ctypes binding of the C API takes a batch
of embeddings (``llama_batch_init(n, n_embd, 1)``), as llama.cpp's own multimodal tools feed image tokens. The
prefill is one such batch (the spliced prompt, positions 0..T-1, logits of the last position only); each decode
step is a one-token batch of ids at the next position. The KV cache is the context's own memory: cleared before
every prefill, and cut back to the prefill's length before a decode, so the latest prefill can be decoded again.
Precision: ``float16`` (default), ``float32`` or ``q8_0`` (see :mod:`.gguf_export`).

``--device cuda`` offloads every layer to the GPU backend llama.cpp was built with (CUDA); a CPU-only build is
refused in one line. llama-cpp-python is an optional extra (``pip install
'hiprune-export[llamacpp]'``): PyPI ships it as source, compiled at install for the machine's backend.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hiprune.errors import BackendUnavailableError, ConfigError, ExportError, HiPruneError, ResourceError
from hiprune.runtime.llm.base import LanguageModel, LLMRuntime, Prefill
from hiprune.runtime.llm.gguf_export import PRECISIONS, check_convertible, exported_gguf

if TYPE_CHECKING:
    import torch

MAX_CONTEXT = 4096  # tokens the context holds (prompt + generated), at most the model's max_position_embeddings
INSTALL = (
    "--llm-runtime llama.cpp needs llama-cpp-python: pip install 'hiprune-export[llamacpp]' "
    "(built from source for this machine; CMAKE_ARGS='-DGGML_CUDA=on' for NVIDIA GPUs)"
)
_LOG_ERROR, _LOG_CONT = 4, 5  # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT (continues the last)
_log: dict[str, Any] = {"callback": None, "last": 0}


def _binding() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailableError(INSTALL) from None
    if _log["callback"] is None:
        _log["callback"] = llama_cpp.llama_log_callback(_errors_only)  # kept referenced: C holds the pointer
        llama_cpp.llama_log_set(_log["callback"], ctypes.c_void_p(0))
    return llama_cpp


def context_for(config: Any) -> int:
    """The context's length for a text ``config``: :data:`MAX_CONTEXT`, or less where the model's positions end."""
    return min(MAX_CONTEXT, int(getattr(config, "max_position_embeddings", MAX_CONTEXT)))


def _errors_only(level: int, text: bytes, _user_data: Any) -> None:
    """llama.cpp's log, errors only (the binding's own callback shows its load-time warnings as errors)."""
    _log["last"] = _log["last"] if level == _LOG_CONT else level
    if _log["last"] >= _LOG_ERROR:
        sys.stderr.write(text.decode("utf-8", errors="replace"))


class LlamaCppLLM(LLMRuntime):
    """The checkpoint's language model on llama.cpp (CPU, or every layer on its GPU backend with ``cuda``)."""

    name: ClassVar[str] = "llama.cpp"
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS

    def __init__(
        self, lm: LanguageModel, device: str = "cpu", dtype: str | None = None, context: int | None = None,
        threads: int | None = None,
    ) -> None:  # fmt: skip
        import torch

        super().__init__(lm, device, dtype)
        self.dtype = dtype or "float16"
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {device!r} is unknown; choose cpu or cuda")
        self.check_usable(lm.config)
        self._c = _binding()
        if device == "cuda" and not self._c.llama_supports_gpu_offload():
            raise BackendUnavailableError(
                "--device cuda: this llama-cpp-python was built without a GPU backend; reinstall it with "
                "CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-cache-dir llama-cpp-python"
            )
        self.path = exported_gguf(lm, self.dtype)
        self._table = lm.embedding_table()
        lm.release()  # llama.cpp runs the GGUF; the float32 torch model need not stay in memory
        self.threads = threads or torch.get_num_threads()  # the transformers runtime's count: comparable timings
        self._open(context or context_for(lm.config), self.threads)

    @classmethod
    def check_usable(cls, text_config: Any | None) -> None:
        """llama-cpp-python installed; a decoder the GGUF writer converts; no sliding window inside the context
        (llama.cpp's ``llama`` and ``qwen2`` graphs attend to every cached token)."""
        if text_config is not None:
            check_convertible(text_config)
            window = getattr(text_config, "sliding_window", None)
            if getattr(text_config, "use_sliding_window", True) and window and window < context_for(text_config):
                raise ConfigError(
                    f"this {text_config.model_type} model attends within a {window}-token sliding window, which the "
                    "llama.cpp runtime does not apply; use --llm-runtime transformers or onnxruntime"
                )
        if importlib.util.find_spec("llama_cpp") is None:
            raise BackendUnavailableError(INSTALL)

    @classmethod
    def model_placement(cls, device: str) -> tuple[str, str]:
        """The GGUF is written from the float32 model on the CPU, whatever device llama.cpp then uses."""
        return ("cpu", "float32")

    def _open(self, context: int, threads: int) -> None:
        c = self._c
        c.llama_backend_init()
        model_params = c.llama_model_default_params()
        model_params.n_gpu_layers = -1 if self.device == "cuda" else 0
        self._model = c.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise ExportError(f"llama.cpp could not load {self.path}; delete that directory to rewrite it")
        params = c.llama_context_default_params()
        params.n_ctx = params.n_batch = context  # a whole prompt is one batch; llama.cpp splits it into micro-batches
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = c.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ResourceError(f"llama.cpp could not create a {context}-token context for {self.path}")
        self.context = context
        self._logits_width = self.vocab_size
        self._prefills = 0  # which prefill the context's memory holds

    def close(self) -> None:
        """Frees the context and the model (also when the runtime is garbage-collected)."""
        if getattr(self, "_ctx", None):
            self._c.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._c.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()

    def _require_open(self) -> None:
        if not getattr(self, "_ctx", None):
            raise ConfigError("this llama.cpp runtime is closed (the chain that opened it ended); open a new chain")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self._table[input_ids.cpu().numpy()])

    def _run(self, batch: Any, count: int) -> np.ndarray:
        """Decodes ``batch`` (``count`` positions, the last one's logits asked for); its float32 logits."""
        status = self._c.llama_decode(self._ctx, batch)
        if status != 0:
            raise HiPruneError(
                f"llama.cpp decode failed (status {status}) at {count} tokens; the context holds {self.context}"
            )
        pointer = self._c.llama_get_logits_ith(self._ctx, -1)
        if not pointer:
            raise HiPruneError(f"llama.cpp returned no logits for the last of {count} tokens")
        return np.ctypeslib.as_array(pointer, shape=(self._logits_width,)).astype(np.float32)

    def _batch(self, count: int, start: int, embeds: np.ndarray | None, token: int | None) -> Any:
        c = self._c
        batch = c.llama_batch_init(count, 0 if embeds is None else embeds.shape[-1], 1)
        batch.n_tokens = count
        if embeds is not None:
            flat = np.ascontiguousarray(embeds.reshape(-1), dtype=np.float32)
            ctypes.memmove(batch.embd, flat.ctypes.data, flat.nbytes)
        else:
            batch.token[0] = token
        for i in range(count):
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == count - 1
        return batch

    def prefill(self, inputs_embeds: torch.Tensor) -> Prefill:
        import torch

        self._require_open()
        embeds = inputs_embeds.detach().float().cpu().numpy()[0]
        if embeds.shape[0] >= self.context:
            raise ConfigError(
                f"the prompt has {embeds.shape[0]} tokens; the llama.cpp context holds {self.context} "
                "(the model's positions, at most 4096); shorten the prompt"
            )
        self._c.llama_memory_clear(self._c.llama_get_memory(self._ctx), True)
        self._prefills += 1
        batch = self._batch(embeds.shape[0], 0, embeds, None)
        try:
            logits = self._run(batch, embeds.shape[0])
        finally:
            self._c.llama_batch_free(batch)
        return Prefill(int(logits.argmax()), torch.from_numpy(logits), self._prefills, embeds.shape[0])

    def decode(self, prefill: Prefill, max_new_tokens: int) -> list[int]:
        self._require_open()
        if prefill.state != self._prefills:
            raise ConfigError("this llama.cpp prefill was replaced by a later one on the same context; prefill again")
        tokens, length = [prefill.first_token], prefill.length
        self._c.llama_memory_seq_rm(self._c.llama_get_memory(self._ctx), 0, length, -1)  # an earlier decode's tokens
        batch = self._batch(1, length, None, prefill.first_token)
        try:
            while len(tokens) < max_new_tokens and tokens[-1] != self.eos_token_id and length < self.context:
                batch.token[0], batch.pos[0] = tokens[-1], length
                tokens.append(int(self._run(batch, length + 1).argmax()))
                length += 1
        finally:
            self._c.llama_batch_free(batch)
        if length >= self.context and len(tokens) < max_new_tokens:
            self.note = f"decoding stopped at {len(tokens)} tokens: the llama.cpp context ({self.context}) is full"
        return tokens

    def synchronize(self) -> None:
        self._c.llama_synchronize(self._ctx)
