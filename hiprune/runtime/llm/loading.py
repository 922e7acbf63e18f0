"""The chain's language model and tokenizer: from the checkpoint an artifact names (or ``--llm DIR``), or the
built-in default (LLaVA-1.5-7B shapes, random weights, a local tokenizer), optionally cut to its first layers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from hiprune.errors import CheckpointError, ConfigError
from hiprune.quiet import quiet
from hiprune.runtime.llm.base import LanguageModel

KEY_SAMPLE = 1 << 20  # bytes hashed from each end of every weight file
LLM_CACHE = ".hiprune-llm-cache"  # beside the artifact directory: what runtimes derive from the language model


@dataclasses.dataclass(frozen=True)
class TextSide:
    """What splicing needs besides the model: the tokenizer, the image token and the prompt format."""

    tokenizer: Any
    image_token_id: int
    chat_template: str | None


def load_language_model(
    checkpoint: str | None, artifact_dir: Path, layers: int | None, device: str, dtype: str, digest: str | None = None
) -> tuple[LanguageModel, TextSide]:
    """The causal LM (``layers`` first decoder layers, all when ``None``) on ``device`` in ``dtype``, and its text side.

    The weights load when a runtime first asks for :attr:`LanguageModel.model` (a runtime whose export is cached
    never does); the config, key, tokenizer and end-of-sequence id are read now.

    Args:
        checkpoint: a LLaVA-style checkpoint directory, or ``None`` for the built-in default.
        artifact_dir: the encoder artifact; runtime caches go beside it.
        layers: keep only the first ``layers`` decoder layers (a quick run on a CPU).
        device: ``cpu`` or ``cuda``: where the weights are put.
        dtype: ``float32`` / ``float16`` / ``bfloat16``.
        digest: the checkpoint's :func:`checkpoint_digest` where the caller has it (computed here otherwise).
    """
    import torch

    torch_dtype = getattr(torch, dtype)
    cache_dir = Path(artifact_dir).resolve().parent / LLM_CACHE
    if checkpoint is None:
        return _default_model(layers, device, torch_dtype, cache_dir)
    return _checkpoint_model(Path(checkpoint), layers, device, torch_dtype, cache_dir, digest)


def language_model_record(checkpoint: str | None) -> dict[str, Any]:
    """What an artifact's manifest says about its language model: the weights digest ``--llm`` is checked against."""
    if checkpoint is None:
        return {"checkpoint_digest": None, "builtin": "llava-1.5-7b language model shape, random weights"}
    return {"checkpoint_digest": checkpoint_digest(Path(checkpoint))}


def _check_layers(layers: int | None, total: int) -> int:
    if layers is None:
        return total
    if not 1 <= layers <= total:
        raise ConfigError(f"--llm-layers {layers} is outside 1..{total} (the language model's depth); pass a depth")
    return layers


def _default_model(layers: int | None, device: str, dtype: Any, cache_dir: Path) -> tuple[LanguageModel, TextSide]:
    import torch
    from transformers import LlamaForCausalLM

    from hiprune.runtime.defaults import (
        DEFAULT_IMAGE_TOKEN_ID,
        DEFAULT_LLM_SEED,
        DEFAULT_VOCAB,
        build_char_tokenizer,
        default_text_config,
    )

    depth = _check_layers(layers, default_text_config().num_hidden_layers)
    config = default_text_config(depth)

    def load() -> Any:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(DEFAULT_LLM_SEED)
            return LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa").eval()

    import transformers

    # random weights: what makes them is the libraries' initialisation, so their versions are part of the key
    versions = f"torch{torch.__version__}-transformers{transformers.__version__}"
    key = f"default-llava15-7b-seed{DEFAULT_LLM_SEED}-layers{depth}-{versions}"
    tokenizer = build_char_tokenizer(DEFAULT_VOCAB, DEFAULT_IMAGE_TOKEN_ID)
    lm = LanguageModel(None, key, cache_dir, config.eos_token_id, config=config, loader=load)
    return lm, TextSide(tokenizer, DEFAULT_IMAGE_TOKEN_ID, None)


def _checkpoint_model(
    path: Path, layers: int | None, device: str, dtype: Any, cache_dir: Path, digest: str | None
) -> tuple[LanguageModel, TextSide]:
    from transformers import AutoConfig, AutoModelForImageTextToText

    from hiprune.export.loading import resolve_checkpoint

    checkpoint = resolve_checkpoint(str(path))
    config = checkpoint.config
    if not hasattr(config, "text_config") or not hasattr(config, "image_token_id"):
        raise CheckpointError(f"--llm {path}: {config.model_type} is not a LLaVA-style checkpoint with a text_config")
    depth = _check_layers(layers, config.text_config.num_hidden_layers)
    config = AutoConfig.from_pretrained(checkpoint.path, local_files_only=True)
    config.text_config.num_hidden_layers = depth

    def load() -> Any:
        with quiet("transformers"):
            vlm = AutoModelForImageTextToText.from_pretrained(
                checkpoint.path, config=config, dtype=dtype, attn_implementation="sdpa", local_files_only=True
            )
        return _causal_lm(vlm, config.text_config).to(device).eval()

    text = _text_side(checkpoint.path, config.image_token_id)
    eos = text.tokenizer.eos_token_id if text.tokenizer.eos_token_id is not None else config.text_config.eos_token_id
    key = f"{digest or checkpoint_digest(checkpoint.path)}-layers{depth}"
    return LanguageModel(None, key, cache_dir, eos, config=config.text_config, loader=load), text


def _causal_lm(vlm: Any, text_config: Any) -> Any:
    """A plain causal LM (``AutoModelForCausalLM``) over the VLM's own decoder and head modules (no copies)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config, attn_implementation="sdpa")
    lm.model = vlm.model.language_model
    lm.lm_head = vlm.lm_head
    lm.config = vlm.model.language_model.config
    if any(t.is_meta for t in (*lm.parameters(), *lm.buffers())):
        raise CheckpointError(f"the {text_config.model_type} language model could not be assembled from the checkpoint")
    return lm


def _text_side(path: Path, image_token_id: int) -> TextSide:
    from transformers import AutoTokenizer

    try:
        with quiet("transformers"):
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:
        raise CheckpointError(
            f"--llm {path}: no tokenizer could be loaded; the checkpoint needs its tokenizer files"
        ) from None
    return TextSide(tokenizer, image_token_id, _chat_template(path, tokenizer))


def _chat_template(path: Path, tokenizer: Any) -> str | None:
    """The checkpoint's chat template: the processor's (``chat_template.json``/``.jinja``) or the tokenizer's."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return getattr(tokenizer, "chat_template", None)


def checkpoint_digest(path: Path) -> str:
    """Identifies the weights without reading gigabytes: config, and each weight file's name, size, head and tail."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(KEY_SAMPLE))
            handle.seek(max(0, size - KEY_SAMPLE))
            digest.update(handle.read(KEY_SAMPLE))
    return digest.hexdigest()[:16]
