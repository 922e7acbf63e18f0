"""What the built-in default needs beside its encoder, built locally (nothing downloads): LLaVA-1.5's image
processor settings, a LLaVA-1.5-7B-shaped language model with random weights, and a character-level tokenizer."""

from __future__ import annotations

import itertools
import string
from typing import Any

DEFAULT_IMAGE_SIZE = 336
DEFAULT_VOCAB = 32064
DEFAULT_IMAGE_TOKEN_ID = 32000  # LLaVA-1.5's <image>
DEFAULT_LLM_SEED = 0
SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Llama
IMAGE_TOKEN = "<image>"


def clip_image_processor_class() -> Any:
    """CLIP's image processor class on the PIL backend (no torchvision needed)."""
    import transformers

    # transformers 5 splits the PIL backend out; earlier releases have one class
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def default_image_processor() -> Any:
    """LLaVA-1.5's CLIP preprocessing: shortest edge 336 (bicubic), centre crop 336, CLIP mean/std."""
    processor = clip_image_processor_class()
    size = DEFAULT_IMAGE_SIZE
    return processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def default_text_config(num_layers: int = 32) -> Any:
    """LLaVA-1.5-7B's language model (Vicuna-7B: Llama, 4096 wide, 32 heads, 11008 MLP), ``num_layers`` deep."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=num_layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=DEFAULT_VOCAB,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=DEFAULT_IMAGE_TOKEN_ID + 1,
    )


def build_char_tokenizer(vocab_size: int, image_token_id: int) -> Any:
    """A character-level tokenizer with Llama's special ids and ``<image>`` at ``image_token_id``.

    Printable ASCII and newline are one token each; the rest of the vocabulary is filled with short letter
    strings so that every id decodes to readable text.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    if image_token_id < len(SPECIALS) or image_token_id >= vocab_size:
        raise ValueError(f"image_token_id {image_token_id} must be in {len(SPECIALS)}..{vocab_size - 1}")
    filler = ("".join(p) for n in itertools.count(2) for p in itertools.product(string.ascii_lowercase, repeat=n))
    names = itertools.chain(SPECIALS, chars, (" " + w for w in filler))
    vocab: dict[str, int] = {IMAGE_TOKEN: image_token_id}
    for index in range(vocab_size):
        if index != image_token_id:
            vocab[next(names)] = index
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
