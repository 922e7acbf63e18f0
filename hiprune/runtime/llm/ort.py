"""The ``onnxruntime`` language-model runtime: the exported ONNX decoder driven by an explicit KV-cache loop.

One session serves prefill (``past`` of length 0) and every decode step. Inputs and outputs go through an I/O
binding, so on the CUDA execution provider the KV cache stays on the GPU between steps and only the last
position's logits come back to the host. CPU here; CUDA where ``onnxruntime-gpu`` is installed and a GPU is
visible. The TensorRT execution provider is not used for the decoder: its engines are built per input-shape
profile, and a decode loop changes the ``past`` length at every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hiprune.errors import BackendUnavailableError, ConfigError
from hiprune.runtime.llm.base import LanguageModel, LLMRuntime, Prefill
from hiprune.runtime.llm.ort_export import DecoderSpec, exported_decoder

if TYPE_CHECKING:
    import torch

_NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (``cpu`` or ``cuda``), or a one-line error."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                "--device cuda with --llm-runtime onnxruntime needs onnxruntime-gpu "
                "(pip install onnxruntime-gpu) and a CUDA GPU; or pass --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"--device {device!r} is unknown; choose cpu or cuda")


class OrtLLM(LLMRuntime):
    """The checkpoint's language model as an ONNX decoder on ONNX Runtime (float32 on CPU, float16 on CUDA)."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(self, lm: LanguageModel, device: str = "cpu", dtype: str | None = None) -> None:
        super().__init__(lm, device, dtype)
        from hiprune.runtime.ort_session import open_session

        providers = providers_for(device)
        self.dtype = dtype or ("float16" if device.startswith("cuda") else "float32")
        self.spec: DecoderSpec = exported_decoder(lm, self.dtype)
        self._np_dtype = _NP_DTYPES[self.dtype]
        self._table = lm.embedding_table()
        lm.release()  # the session runs the export; the float32 torch model need not stay in memory
        self.session = open_session(self.spec.path, providers)
        self._ort_device = "cuda" if device.startswith("cuda") else "cpu"
        self._device_id = int(device.partition(":")[2] or 0) if self._ort_device == "cuda" else 0

    @classmethod
    def model_placement(cls, device: str) -> tuple[str, str]:
        """The export traces the float32 model on the CPU, whatever device the session runs on."""
        return ("cpu", "float32")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self._table[input_ids.cpu().numpy()])

    def _value(self, array: np.ndarray) -> Any:
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self._ort_device, self._device_id)

    def _step(self, embeds: np.ndarray, start: int, past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """One decoder call at positions ``start..``: (last-position float32 logits, present KV as OrtValues)."""
        binding = self.session.io_binding()
        positions = np.arange(start, start + embeds.shape[1], dtype=np.int64)[None]
        binding.bind_ortvalue_input("inputs_embeds", self._value(embeds.astype(self._np_dtype, copy=False)))
        binding.bind_ortvalue_input("position_ids", self._value(positions))
        for name, value in zip(self.spec.inputs[2:], past, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name in self.spec.outputs:
            binding.bind_output(name, self._ort_device, self._device_id)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0].numpy().reshape(-1).astype(np.float32), list(outputs[1:])

    def _empty_past(self) -> list[Any]:
        shape = (1, self.spec.kv_heads, 0, self.spec.head_dim)
        return [self._value(np.zeros(shape, self._np_dtype)) for _ in range(2 * self.spec.num_layers)]

    def prefill(self, inputs_embeds: torch.Tensor) -> Prefill:
        import torch

        embeds = inputs_embeds.detach().float().cpu().numpy()
        logits, present = self._step(embeds, 0, self._empty_past())
        return Prefill(int(logits.argmax()), torch.from_numpy(logits), present, embeds.shape[1])

    def decode(self, prefill: Prefill, max_new_tokens: int) -> list[int]:
        tokens = [prefill.first_token]
        past, length = prefill.state, prefill.length
        while len(tokens) < max_new_tokens and tokens[-1] != self.eos_token_id:
            logits, past = self._step(self._table[[[tokens[-1]]]], length, past)
            length += 1
            tokens.append(int(logits.argmax()))
        return tokens
