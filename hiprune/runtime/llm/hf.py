"""The ``transformers`` LLM runtime: the checkpoint's own causal LM, prefilled from ``inputs_embeds``, greedy.

Two paths share one interface. ``static=False`` (the CPU default) is what ``generate`` does: a growing
``DynamicCache``, no mask, positions 0..T-1. ``static=True`` (the CUDA default) preallocates a ``StaticCache``
and runs each step as pure tensor work over fixed buffers (an explicit 4-D causal mask built from a position
buffer, the greedy argmax written back into an id buffer), so that a prefill of length T and a decode step can
each be captured once as a CUDA graph and replayed: prefill and decode are then not bound by kernel launches.
``compile=True`` also puts the forward through ``torch.compile`` (inductor) before capture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from hiprune.errors import ConfigError
from hiprune.runtime import cuda_graph
from hiprune.runtime.llm.base import LanguageModel, LLMRuntime, Prefill

DEFAULT_MAX_CACHE_LEN = 2048


class HfLLM(LLMRuntime):
    """The causal LM in PyTorch. See the module docstring for the dynamic and static (CUDA-graph) paths."""

    name: ClassVar[str] = "transformers"
    precisions: ClassVar[tuple[str, ...]] = ("float32", "float16", "bfloat16")

    def __init__(
        self,
        lm: LanguageModel,
        device: str = "cpu",
        dtype: str | None = None,
        *,
        static: bool | None = None,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        max_cache_len: int = DEFAULT_MAX_CACHE_LEN,
    ) -> None:
        super().__init__(lm, device, dtype)
        import torch

        on_cuda = device == "cuda"
        self.model = lm.model.to(device=device, dtype=getattr(torch, dtype) if dtype else None).eval()
        self.static = on_cuda if static is None else static
        self.cuda_graphs = (on_cuda and self.static) if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not (on_cuda and self.static):
            raise ConfigError("CUDA graphs need device cuda and the static cache (static=True)")
        self.max_cache_len = max_cache_len
        self._forward: Callable[..., Any] = torch.compile(self.model, dynamic=False) if compile else self.model
        self._cache_kwarg = cache_kwarg(self.model)
        self._buffers: dict[str, Any] = {}
        self._prefill_graphs: dict[int, cuda_graph.CudaGraph] = {}
        self._decode_graph: cuda_graph.CudaGraph | None = None

    def embed(self, input_ids: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.model.get_input_embeddings()(input_ids.to(self.device))

    def prefill(self, inputs_embeds: Any) -> Prefill:
        import torch

        embeds = inputs_embeds.to(device=self.device, dtype=self.model.dtype)
        with torch.no_grad():
            return self._prefill_static(embeds) if self.static else self._prefill_dynamic(embeds)

    def decode(self, prefill: Prefill, max_new_tokens: int) -> list[int]:
        """Greedy continuation of ``prefill`` (consumes its state: decode each prefill once)."""
        import torch

        ids = [prefill.first_token]
        step = self._decode_static if self.static else self._decode_dynamic
        with torch.no_grad():
            while len(ids) < max_new_tokens and ids[-1] != self.eos_token_id:
                ids.append(step(prefill, ids[-1]))
        return ids

    # -- dynamic cache: what generate() does ------------------------------------------------------------------
    def _prefill_dynamic(self, embeds: Any) -> Prefill:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out = self._forward(inputs_embeds=embeds, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        logits = out.logits[0, -1].float()
        return Prefill(int(logits.argmax()), logits, cache, int(embeds.shape[1]))

    def _decode_dynamic(self, prefill: Prefill, last: int) -> int:
        import torch

        ids = torch.tensor([[last]], device=self.device)
        out = self._forward(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: prefill.state})
        return int(out.logits[0, -1].argmax())

    # -- static cache: fixed buffers, capturable ---------------------------------------------------------------
    def _setup_static(self) -> dict[str, Any]:
        import torch
        from transformers import StaticCache

        if not self._buffers:
            cache = StaticCache(config=self.model.config, max_cache_len=self.max_cache_len)
            if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
                raise ConfigError("the static path supports full-attention decoders only; use static=False")
            self._buffers = {
                "cache": cache,
                "kv_positions": torch.arange(self.max_cache_len, device=self.device),
                "ids": torch.zeros(1, 1, dtype=torch.long, device=self.device),  # the last greedy token
                "pos": torch.zeros(1, 1, dtype=torch.long, device=self.device),  # its position
            }
        return self._buffers

    def _step(self, embeds: Any, positions: Any) -> Any:
        """One forward at ``positions`` (1, T) over the static cache; the argmax goes to the id buffer."""
        b = self._buffers
        mask = (b["kv_positions"] <= positions[0][:, None])[None, None]  # (1, 1, T, L), True = attend
        out = self._forward(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: b["cache"]},
        )
        logits = out.logits[:, -1].float()
        b["ids"].copy_(logits.argmax(-1, keepdim=True))
        return logits

    def _prefill_body(self, embeds: Any, positions: Any) -> Any:
        for layer in self._buffers["cache"].layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.zero_()  # the cache writes at its own counter: restart it at 0
        logits = self._step(embeds, positions)
        self._buffers["pos"].fill_(positions.shape[1])
        return logits

    def _decode_body(self) -> Any:
        b = self._buffers
        logits = self._step(self.model.get_input_embeddings()(b["ids"]), b["pos"])
        b["pos"].add_(1)
        return logits

    def _prefill_static(self, embeds: Any) -> Prefill:
        import torch

        length = int(embeds.shape[1])
        if length >= self.max_cache_len:
            raise ConfigError(f"the prompt is {length} tokens; the static cache holds {self.max_cache_len}")
        self._setup_static()
        positions = torch.arange(length, device=self.device)[None]
        if self.cuda_graphs:
            self._capture(length, embeds)
        if self.cuda_graphs:
            graph = self._prefill_graphs[length]
            graph.inputs[0].copy_(embeds)
            logits = graph.replay()
        else:
            logits = self._prefill_body(embeds, positions)
        first = int(self._buffers["ids"])
        return Prefill(first, logits[0].clone(), None, length)

    def _decode_static(self, prefill: Prefill, last: int) -> int:
        if prefill.length + 1 >= self.max_cache_len:
            raise ConfigError(f"the static cache ({self.max_cache_len} tokens) is full; raise max_cache_len")
        if self._decode_graph is not None:
            self._decode_graph.replay()
        else:
            self._decode_body()
        prefill.length += 1
        return int(self._buffers["ids"])

    def _capture(self, length: int, embeds: Any) -> None:
        """Captures the decode step (once) and the prefill of this length (once each); eager if capture fails."""
        import torch

        try:
            if self._decode_graph is None:  # before any prefill: its warm-up runs may overwrite the buffers
                self._decode_graph = cuda_graph.CudaGraph(self._decode_body, ())
            if length not in self._prefill_graphs:
                positions = torch.arange(length, device=self.device)[None]
                inputs = (torch.zeros_like(embeds), positions)
                self._prefill_graphs[length] = cuda_graph.CudaGraph(self._prefill_body, inputs)
        except Exception as exc:  # capture is all-or-nothing: fall back to the same static path, eager
            self.cuda_graphs, self._decode_graph, self._prefill_graphs = False, None, {}
            self.note = cuda_graph.capture_failure(exc, "language model")


def cache_kwarg(model: Any) -> str:
    """transformers 5.2x names the KV-cache argument ``cache``; earlier releases ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned: ``output.cache`` in transformers 5.2x, ``past_key_values`` before."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
