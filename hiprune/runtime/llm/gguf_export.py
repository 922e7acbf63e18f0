"""The language model as a GGUF file for llama.cpp: the checkpoint's decoder weights under llama.cpp's names.

Written with the ``gguf`` package (the GGUF reference writer, maintained with llama.cpp) from the same float32
module the other runtimes run: its :class:`gguf.TensorNameMap` gives each transformers parameter its llama.cpp
name; the query and key projections of Llama-style models are reordered for llama.cpp's interleaved rotary
layout, as llama.cpp's own converter does. Supported decoders: ``llama`` and ``mistral`` (llama.cpp's ``llama``
architecture) and ``qwen2``, with the default rotary embedding; others are refused in one line.

The chain feeds llama.cpp embeddings and token ids and turns ids into text with the checkpoint's own tokenizer,
so the file's vocabulary is a list of placeholder pieces of the right size (with the checkpoint's BOS/EOS ids):
the file drives the chain, it is not a chat model for llama.cpp's own tools. Exports are cached beside the
encoder artifact, keyed by the weights key and the precision, and written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hiprune.artifacts import staged_output
from hiprune.errors import ExportError
from hiprune.runtime.llm.base import LanguageModel

EXPORT_FORMAT = "hiprune-llm-gguf/1"
MODEL = "model.gguf"
PRECISIONS = ("float16", "float32", "q8_0")
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}  # transformers model_type → llama.cpp arch
_PERMUTED = {"llama"}  # archs whose q/k rows llama.cpp expects in interleaved rotary order
_Q8_BLOCK = 32


def cache_path(cache_dir: Path, key: str, precision: str) -> Path:
    """Where the GGUF of weights ``key`` at ``precision`` lives; the name changes whenever either does."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}|{key}|{precision}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"llm-gguf-{precision}-{digest}"


def exported_gguf(lm: LanguageModel, precision: str) -> Path:
    """The cached GGUF of ``lm``, written first when absent (only then is the torch model loaded)."""
    if precision not in PRECISIONS:
        raise ExportError(f"llama.cpp precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    arch = check_convertible(lm.config)
    directory = cache_path(lm.cache_dir, lm.key, precision)
    if not (directory / MODEL).is_file():
        with staged_output(directory, force=True) as stage:
            write_gguf(lm.model, stage / MODEL, arch, precision, lm.key)
    return directory / MODEL


def check_convertible(config: Any) -> str:
    """The llama.cpp architecture for a transformers text ``config``, or one line saying why it cannot be written."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise ExportError(
            f"the llama.cpp runtime converts {', '.join(ARCHS)} language models, not {model_type!r}; "
            "use --llm-runtime transformers or onnxruntime"
        )
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ExportError(f"the llama.cpp runtime supports the default rotary embedding, not {rope['rope_type']!r}")
    return ARCHS[model_type]


def _rope_theta(config: Any) -> float:
    rope = dict(getattr(config, "rope_parameters", None) or {})
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _interleave(weight: Any, heads: int) -> Any:
    """Rows of a q/k projection from transformers' rotate-half order to llama.cpp's pairwise order, per head."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _write_header(writer: Any, config: Any, key: str, file_type: int) -> None:
    import gguf

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(f"hiprune chain language model {key}")
    writer.add_file_type(file_type)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(kv_heads))
    writer.add_key_length(int(head_dim))
    writer.add_value_length(int(head_dim))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_tokenizer_model("llama")
    special = {i for i in (config.bos_token_id, config.eos_token_id) if isinstance(i, int)}
    writer.add_token_list([f"<hiprune-{i}>" for i in range(config.vocab_size)])
    writer.add_token_scores([0.0] * config.vocab_size)
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    writer.add_token_types([control if i in special else normal for i in range(config.vocab_size)])
    if isinstance(config.bos_token_id, int):
        writer.add_bos_token_id(config.bos_token_id)
    if isinstance(config.eos_token_id, int):
        writer.add_eos_token_id(config.eos_token_id)


def _ggml_type(shape: tuple[int, ...], precision: str) -> Any:
    """1-D tensors stay float32, as llama.cpp's converter keeps them; Q8_0 needs whole 32-value blocks along each
    row (rows that are not keep float16)."""
    import gguf

    types = gguf.GGMLQuantizationType
    if len(shape) == 1 or precision == "float32":
        return types.F32
    if precision == "q8_0" and shape[-1] % _Q8_BLOCK == 0:
        return types.Q8_0
    return types.F16


def _nbytes(shape: tuple[int, ...], ggml_type: Any) -> int:
    import math

    import gguf

    return math.prod(gguf.quants.quant_shape_to_byte_shape(shape, ggml_type))


def _tensors(model: Any, arch: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(GGUF name, state-dict name, shape) of every weight, in writing order."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    planned = []
    for name, tensor in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ExportError(f"the llama.cpp runtime has no GGUF name for {name!r} of this {config.model_type} model")
        planned.append((target, name, tuple(tensor.shape)))
    return planned


def write_gguf(model: Any, path: Path, arch: str, precision: str, key: str) -> None:
    """Writes ``model``'s decoder (embedding, layers, final norm, head) to ``path`` in GGUF, one tensor at a time:
    the tensor table first, then each weight converted and written (no second copy of the model in memory)."""
    import gguf
    import numpy as np

    config = model.config
    file_types = {"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}  # fmt: skip
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    planned = _tensors(model, arch)
    writer = gguf.GGUFWriter(path, arch)
    _write_header(writer, config, key, file_types[precision])
    for target, _, shape in planned:
        ggml_type = _ggml_type(shape, precision)
        writer.add_tensor_info(target, shape, np.dtype(np.float32), _nbytes(shape, ggml_type), raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    weights = model.state_dict()
    for _, name, shape in planned:
        array = weights[name].detach().float().cpu().numpy()
        if arch in _PERMUTED and ".self_attn.q_proj." in name:
            array = _interleave(array, heads)
        elif arch in _PERMUTED and ".self_attn.k_proj." in name:
            array = _interleave(array, kv_heads)
        writer.write_tensor_data(gguf.quants.quantize(array, _ggml_type(shape, precision)))
    writer.close()
