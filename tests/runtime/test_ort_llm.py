"""The ``onnxruntime`` LLM runtime against transformers on a tiny causal LM: prefill logits, greedy ids, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiprune.runtime.llm import LanguageModel, get_llm_runtime
from hiprune.runtime.llm.ort_export import cache_path


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # wide logit margins: greedy ids do not hinge on float rounding
    return model


@pytest.fixture(scope="module")
def ort_llm(tiny_lm, tmp_path_factory):
    lm = LanguageModel(tiny_lm, "tiny-llama-seed0", tmp_path_factory.mktemp("llm-cache"), eos_token_id=None)
    return get_llm_runtime("onnxruntime")(lm)


def _embeds(length: int, seed: int) -> torch.Tensor:
    return torch.randn(1, length, 48, generator=torch.Generator().manual_seed(seed))


def test_prefill_logits_and_greedy_ids_match_transformers(tiny_lm, ort_llm):
    embeds = _embeds(11, seed=1)
    with torch.no_grad():
        reference_logits = tiny_lm(inputs_embeds=embeds).logits[0, -1]
        attention = torch.ones(1, 11, dtype=torch.long)
        reference_ids = tiny_lm.generate(
            inputs_embeds=embeds, attention_mask=attention, max_new_tokens=12, do_sample=False, eos_token_id=None,
            pad_token_id=0,
        )[0].tolist()  # fmt: skip
    prefill = ort_llm.prefill(embeds)
    assert torch.allclose(prefill.logits, reference_logits, atol=1e-4), (prefill.logits - reference_logits).abs().max()
    assert ort_llm.decode(prefill, 12) == reference_ids
    assert len(reference_ids) == 12


@pytest.mark.parametrize("static", [False, True])
def test_same_ids_and_logits_as_the_transformers_runtime(ort_llm, static):
    hf = get_llm_runtime("transformers")(ort_llm.lm, static=static)
    embeds = _embeds(9, seed=5)
    ours, theirs = ort_llm.prefill(embeds), hf.prefill(embeds)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-4)
    assert ort_llm.decode(ours, 10) == hf.decode(theirs, 10)


def test_embed_is_the_checkpoint_table_and_decode_stops_at_eos(tiny_lm, ort_llm):
    ids = torch.tensor([[3, 17, 99]])
    assert torch.equal(ort_llm.embed(ids), tiny_lm.get_input_embeddings()(ids).detach())
    prefill = ort_llm.prefill(_embeds(6, seed=2))
    free = ort_llm.decode(prefill, 8)
    ort_llm.eos_token_id = free[3]
    try:
        stopped = ort_llm.decode(ort_llm.prefill(_embeds(6, seed=2)), 8)
    finally:
        ort_llm.eos_token_id = None
    assert stopped == free[: free.index(free[3]) + 1]


def test_float16_decoder_gives_the_same_ids_and_leaves_the_shared_model_float32(tiny_lm, ort_llm):
    half = get_llm_runtime("onnxruntime")(ort_llm.lm, dtype="float16")
    embeds = _embeds(9, seed=7)
    ours, reference = half.prefill(embeds), ort_llm.prefill(embeds)
    assert half.spec.dtype == "float16" and next(tiny_lm.parameters()).dtype == torch.float32
    assert torch.allclose(ours.logits, reference.logits, atol=1e-2)
    assert half.decode(ours, 8) == ort_llm.decode(reference, 8)


def test_export_is_cached_by_key(tiny_lm, ort_llm):
    directory = cache_path(ort_llm.lm.cache_dir, ort_llm.lm.key, "float32")
    stamp = (directory / "decoder.onnx").stat().st_mtime_ns
    again = get_llm_runtime("onnxruntime")(ort_llm.lm)
    assert again.spec.path == directory / "decoder.onnx"
    assert (directory / "decoder.onnx").stat().st_mtime_ns == stamp
    assert directory.name in [p.name for p in ort_llm.lm.cache_dir.iterdir()]


def test_a_precision_the_runtime_does_not_run_is_refused_before_the_export(tiny_lm, tmp_path):
    from hiprune.errors import ConfigError

    lm = LanguageModel(tiny_lm, "tiny", tmp_path, None)
    with pytest.raises(ConfigError, match="--llm-precision q8_0 is not one the onnxruntime runtime runs; choose one"):
        get_llm_runtime("onnxruntime")(lm, dtype="q8_0")
    assert not list(tmp_path.iterdir())


def test_a_cached_export_runs_without_loading_the_model(ort_llm):
    lm = ort_llm.lm
    fail = lambda: pytest.fail("the torch model was loaded")  # noqa: E731
    unloadable = LanguageModel(None, lm.key, lm.cache_dir, None, config=lm.config, loader=fail)
    again = get_llm_runtime("onnxruntime")(unloadable)
    embeds, ids = _embeds(7, seed=3), torch.tensor([[5, 77, 3]])
    assert torch.equal(again.prefill(embeds).logits, ort_llm.prefill(embeds).logits)
    assert torch.equal(again.embed(ids), lm.model.get_input_embeddings()(ids).detach())
    assert not unloadable.loaded


def test_embedding_tables_are_one_per_key_and_a_damaged_one_is_written_again(tiny_lm, tmp_path):
    from transformers import LlamaForCausalLM

    other = LlamaForCausalLM(tiny_lm.config).eval()  # other random weights, same shapes
    first = LanguageModel(None, "first", tmp_path, None, config=tiny_lm.config, loader=lambda: tiny_lm)
    second = LanguageModel(other, "second", tmp_path, None)
    expected = tiny_lm.get_input_embeddings().weight.detach().numpy()
    assert np.array_equal(first.embedding_table(), expected)
    assert np.array_equal(second.embedding_table(), other.get_input_embeddings().weight.detach().numpy())
    first.release()
    assert not first.loaded and np.array_equal(first.embedding_table(), expected)  # from the file: not loaded
    assert not first.loaded
    (table,) = [p for p in tmp_path.glob("embed-tokens-*.npy") if np.array_equal(np.load(p), expected)]
    table.write_bytes(table.read_bytes()[:-100])  # truncated, as by a full disk
    assert np.array_equal(first.embedding_table(), expected) and first.loaded
    np.save(table, np.zeros((7, 3), np.float32))  # a readable array of another shape
    assert np.array_equal(first.embedding_table(), expected)


def test_the_layer_cut_and_the_library_versions_are_in_the_default_key(tmp_path):
    import transformers

    from hiprune.runtime.llm.loading import load_language_model

    one, _ = load_language_model(None, tmp_path / "artifact", 1, "cpu", "float32")
    two, _ = load_language_model(None, tmp_path / "artifact", 2, "cpu", "float32")
    assert one.key != two.key and not one.loaded and not two.loaded  # keys are known without the weights
    assert torch.__version__ in one.key and transformers.__version__ in one.key
    assert one.config.num_hidden_layers == 1 and two.config.num_hidden_layers == 2


def test_chain_with_onnxruntime_generates_what_transformers_does(tiny_vlm, photo, tmp_path):
    from hiprune.api import ExportRequest, export
    from hiprune.config import HiPruneConfig
    from hiprune.runtime.chain import Chain

    artifact = tmp_path / "k8"
    export(ExportRequest(hiprune=HiPruneConfig(keep=8), model=str(tiny_vlm()), output=artifact))
    runs = {}
    for runtime in ("transformers", "onnxruntime"):
        with Chain(artifact, runtime) as chain:
            runs[runtime] = chain.run(photo(48, 1), "What is in the picture?", max_new_tokens=6)
    assert runs["onnxruntime"].generated_ids == runs["transformers"].generated_ids
    assert runs["onnxruntime"].kept_tokens == 8 and runs["onnxruntime"].llm_runtime == "onnxruntime"
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint's weights were loaded")

    with pytest.MonkeyPatch.context() as patch:  # the decoder export is cached: the weights stay on disk
        patch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", refuse)
        with Chain(artifact, "onnxruntime") as chain:
            again = chain.run(photo(48, 1), "What is in the picture?", max_new_tokens=6)
    assert again.generated_ids == runs["onnxruntime"].generated_ids
