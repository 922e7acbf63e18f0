"""The language model as an ONNX decoder for ONNX Runtime: ``inputs_embeds`` + KV cache in, last logits + KV out.

Exported with ``torch.onnx.export(dynamo=True)`` from the same transformers module the ``transformers`` runtime
runs, with two dynamic dimensions (new tokens ``seq``, cached tokens ``past``; ``past`` may be 0, so one graph
serves prefill and every decode step). ONNX Runtime GenAI's builder can write such a decoder, but its Generator
takes no user embeddings for a plain decoder, and optimum's ``ORTModelForCausalLM`` has no ``inputs_embeds``; an
export of our own keeps the graph's numerics those of the checkpoint's modeling code.

Exports are cached under the language model's ``cache_dir`` keyed by its weights key and the precision, and
written atomically, so a second run (or a benchmark sweeping budgets) reuses them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from hiprune.artifacts import staged_output
from hiprune.errors import ExportError, one_line
from hiprune.quiet import quiet
from hiprune.runtime.llm.base import LanguageModel
from hiprune.runtime.llm.hf import cache_kwarg, returned_cache

EXPORT_FORMAT = "hiprune-llm-onnx/1"
DECODER = "decoder.onnx"
META = "decoder.json"
DTYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """What a runtime needs to feed the exported decoder (read back from ``decoder.json``)."""

    path: Path
    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @classmethod
    def read(cls, directory: Path) -> DecoderSpec:
        meta = json.loads((directory / META).read_text())
        return cls(
            path=directory / DECODER,
            num_layers=meta["num_layers"],
            kv_heads=meta["kv_heads"],
            head_dim=meta["head_dim"],
            dtype=meta["dtype"],
            inputs=tuple(meta["inputs"]),
            outputs=tuple(meta["outputs"]),
        )


def cache_path(cache_dir: Path, key: str, dtype: str) -> Path:
    """Where the export of weights ``key`` at ``dtype`` lives; the name changes whenever any of them does."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}|{key}|{dtype}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"llm-onnx-{dtype}-{digest}"


def exported_decoder(lm: LanguageModel, dtype: str = "float32") -> DecoderSpec:
    """The cached ONNX decoder of ``lm``, exporting it first when absent (only then is the torch model loaded)."""
    directory = cache_path(lm.cache_dir, lm.key, dtype)
    if not (directory / META).is_file():
        with staged_output(directory, force=True) as stage:
            export_decoder(lm.model, stage, dtype, lm.key)
    return DecoderSpec.read(directory)


def _kv_shape(model: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim), read from a one-token eager run so any attention layout is measured."""
    import torch

    embeds = torch.zeros(1, 1, int(model.config.hidden_size), dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        cache = returned_cache(model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1))
    first = cache.layers[0].keys
    return len(cache.layers), int(first.shape[1]), int(first.shape[3])


def _wrapper(model: Any, num_layers: int) -> Any:
    """A module with flat tensor I/O: (embeds, positions, k0, v0, k1, ...) → (last logits, k0', v0', ...)."""
    import torch
    from transformers import DynamicCache

    kwarg = cache_kwarg(model)

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, inputs_embeds: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(config=self.lm.config)
            for layer in range(num_layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.lm(
                inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=True, logits_to_keep=1,
                **{kwarg: cache},
            )  # fmt: skip
            presents = [t for layer in returned_cache(out).layers for t in (layer.keys, layer.values)]
            return (out.logits, *presents)

    return Decoder().eval()


def export_decoder(model: Any, directory: Path, dtype: str, key: str) -> None:
    """Writes ``decoder.onnx`` (weights as external data) and ``decoder.json`` into ``directory``."""
    import torch

    if dtype not in DTYPES:
        raise ExportError(f"LLM ONNX precision {dtype!r} is unsupported; choose one of {', '.join(DTYPES)}")
    if dtype != "float32":  # a copy: the float32 module stays shared with other runtimes, unrounded
        model = copy.deepcopy(model).to(getattr(torch, dtype))
    try:
        num_layers, kv_heads, head_dim = _kv_shape(model)
        names_in = ["inputs_embeds", "position_ids"] + _kv_names("past", num_layers)
        names_out = ["logits"] + _kv_names("present", num_layers)
        seq, past_len = torch.export.Dim("seq", min=1, max=1 << 16), torch.export.Dim("past", min=0, max=1 << 16)
        example_past, example_seq = 3, 5  # sizes 0 and 1 would specialise the traced dimensions
        float_type = getattr(torch, dtype)
        past = [torch.zeros(1, kv_heads, example_past, head_dim, dtype=float_type) for _ in range(2 * num_layers)]
        args = (
            torch.zeros(1, example_seq, int(model.config.hidden_size), dtype=float_type),
            torch.arange(example_past, example_past + example_seq)[None],
            *past,
        )
        shapes = {"inputs_embeds": {1: seq}, "position_ids": {1: seq}, "past": tuple({2: past_len} for _ in past)}
        with quiet("torch.onnx", "torch.export", "transformers"), torch.no_grad():
            torch.onnx.export(
                _wrapper(model, num_layers), args, str(directory / DECODER), dynamo=True, dynamic_shapes=shapes,
                input_names=names_in, output_names=names_out, external_data=True, optimize=True,
            )  # fmt: skip
    except Exception as exc:
        raise ExportError(f"the language model could not be exported to ONNX ({one_line(exc)})") from None
    meta = {
        "format": EXPORT_FORMAT, "key": key, "dtype": dtype, "num_layers": num_layers, "kv_heads": kv_heads,
        "head_dim": head_dim, "inputs": names_in, "outputs": names_out, "exporter": "torch.onnx.export(dynamo=True)",
    }  # fmt: skip
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")


def _kv_names(prefix: str, num_layers: int) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]
