"""The ``llama.cpp`` LLM runtime: its GGUF file (read back with the gguf package; runs everywhere) and llama.cpp
itself against transformers (marked ``llamacpp``: needs the optional, compiled llama-cpp-python)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from hiprune.errors import ConfigError, ExportError
from hiprune.runtime.llm import LanguageModel, get_llm_runtime
from hiprune.runtime.llm.gguf_export import _interleave, _rope_theta, cache_path, exported_gguf

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (the optional llamacpp extra)"),
]


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        vocab_size=128,
        bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip  (head_dim is not hidden / heads, the rotary base not the default: both must reach the file)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # wide logit margins: greedy ids do not hinge on float rounding
    return model


@pytest.fixture(scope="module")
def lm(tiny_lm, tmp_path_factory):
    return LanguageModel(tiny_lm, "tiny-llama-seed0", tmp_path_factory.mktemp("llm-cache"), eos_token_id=None)


def _read(path):
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    return reader, tensors


def _value(tensor) -> np.ndarray:
    import gguf

    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(tensor.shape)])


def _field(reader, name):
    field = reader.fields[name]
    return field.contents()


def _pairwise_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head reordered (0, d/2, 1, d/2 + 1, ...): the two halves transformers rotates together,
    made adjacent, as llama.cpp's pairwise rotary expects."""
    head_dim = weight.shape[0] // heads
    order = [h * head_dim + i + half * head_dim // 2 for h in range(heads) for i in range(head_dim // 2)
             for half in (0, 1)]  # fmt: skip
    return weight[order]


def _pairwise_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """llama.cpp's ``LLAMA_ROPE_TYPE_NORM``: dimensions (2i, 2i+1) of each head turn by pos * base^(-2i/d)."""
    dim = x.shape[-1]
    angles = positions[:, None].float() * base ** (-torch.arange(0, dim, 2).float() / dim)
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
    return out


def test_interleaved_projections_give_llama_cpp_rotary_the_attention_scores_of_transformers(tiny_lm):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attention, config = tiny_lm.model.layers[0].self_attn, tiny_lm.config
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    x = torch.randn(7, config.hidden_size, generator=torch.Generator().manual_seed(3))
    positions, base = torch.arange(7), _rope_theta(config)  # a wrong base would turn the pairs by other angles
    with torch.no_grad():
        cos, sin = tiny_lm.model.rotary_emb(x[None], positions[None])
        q = (x @ attention.q_proj.weight.T).view(7, heads, head_dim).transpose(0, 1)[None]
        k = (x @ attention.k_proj.weight.T).view(7, kv_heads, head_dim).transpose(0, 1)[None]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        theirs = q[0] @ k[0].repeat_interleave(heads // kv_heads, 0).transpose(1, 2)
        q_rows = torch.from_numpy(_interleave(attention.q_proj.weight.numpy(), heads))
        k_rows = torch.from_numpy(_interleave(attention.k_proj.weight.numpy(), kv_heads))
        q2 = _pairwise_rope((x @ q_rows.T).view(7, heads, head_dim), positions[:, None], base)
        k2 = _pairwise_rope((x @ k_rows.T).view(7, kv_heads, head_dim), positions[:, None], base)
        ours = q2.transpose(0, 1) @ k2.transpose(0, 1).repeat_interleave(heads // kv_heads, 0).transpose(1, 2)
    assert not torch.allclose(q_rows, attention.q_proj.weight)  # the reorder is not the identity
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_gguf_holds_every_weight_under_llama_cpp_names(tiny_lm, lm):
    reader, tensors = _read(exported_gguf(lm, "float32"))
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 2 and _field(reader, "llama.attention.head_count_kv") == 2
    assert _field(reader, "llama.embedding_length") == 64 and _field(reader, "llama.feed_forward_length") == 96
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(500.0)
    assert _field(reader, "llama.rope.dimension_count") == 32 and _field(reader, "llama.attention.key_length") == 32
    assert len(_field(reader, "tokenizer.ggml.tokens")) == 128 and _field(reader, "tokenizer.ggml.eos_token_id") == 2
    layer = tiny_lm.model.layers[1]
    expected = {
        "token_embd.weight": tiny_lm.model.embed_tokens.weight,
        "output.weight": tiny_lm.lm_head.weight,
        "output_norm.weight": tiny_lm.model.norm.weight,
        "blk.1.attn_norm.weight": layer.input_layernorm.weight,
        "blk.1.ffn_norm.weight": layer.post_attention_layernorm.weight,
        "blk.1.attn_v.weight": layer.self_attn.v_proj.weight,
        "blk.1.attn_output.weight": layer.self_attn.o_proj.weight,
        "blk.1.ffn_gate.weight": layer.mlp.gate_proj.weight,
        "blk.1.ffn_up.weight": layer.mlp.up_proj.weight,
        "blk.1.ffn_down.weight": layer.mlp.down_proj.weight,
    }
    assert len(tensors) == 3 + 9 * 2
    for name, weight in expected.items():
        assert np.array_equal(_value(tensors[name]), weight.detach().numpy()), name
    q, k = _value(tensors["blk.1.attn_q.weight"]), _value(tensors["blk.1.attn_k.weight"])
    assert np.array_equal(q, _pairwise_rows(layer.self_attn.q_proj.weight.detach().numpy(), heads=4))
    assert np.array_equal(k, _pairwise_rows(layer.self_attn.k_proj.weight.detach().numpy(), heads=2))


def test_q8_0_quantizes_whole_blocks_and_keeps_the_rest_float16(tiny_lm, lm):
    import gguf

    _, tensors = _read(exported_gguf(lm, "q8_0"))
    types = gguf.GGMLQuantizationType
    down, up = tensors["blk.0.ffn_down.weight"], tensors["blk.0.ffn_up.weight"]  # rows of 96 and of 64 values
    assert down.tensor_type == types.Q8_0 and up.tensor_type == types.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == types.F32
    weight = tiny_lm.model.layers[0].mlp.down_proj.weight.detach().numpy()
    error = np.abs(_value(down) - weight).max()
    assert 0 < error <= np.abs(weight).max() / 127, error


def test_rows_that_are_not_whole_q8_blocks_stay_float16(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=64)  # fmt: skip
    _, tensors = _read(exported_gguf(LanguageModel(LlamaForCausalLM(config).eval(), "rows-48", tmp_path, None), "q8_0"))
    import gguf

    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.F16  # rows of 48 values
    assert tensors["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0  # rows of 64


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    """Qwen2: biased q/k/v projections, rotate-half rotary in llama.cpp too (no reordering), tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(8.0)  # also the tied head: wide logit margins
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0, 0.5)  # biases that change the attention scores
            layer.self_attn.k_proj.bias.normal_(0, 0.5)
    return LanguageModel(model, "tiny-qwen2-seed1", tmp_path_factory.mktemp("qwen2-cache"), eos_token_id=None)


def test_qwen2_keeps_its_biases_and_rotary_order(tiny_qwen2):
    model = tiny_qwen2.model
    reader, tensors = _read(exported_gguf(tiny_qwen2, "float32"))
    attention = model.model.layers[0].self_attn
    assert _field(reader, "general.architecture") == "qwen2"
    assert np.array_equal(_value(tensors["blk.0.attn_q.weight"]), attention.q_proj.weight.detach().numpy())
    assert np.array_equal(_value(tensors["blk.0.attn_k.bias"]), attention.k_proj.bias.detach().numpy())
    assert np.array_equal(_value(tensors["output.weight"]), model.model.embed_tokens.weight.detach().numpy())


def test_unsupported_model_and_precision_are_refused_in_one_line(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)).eval()
    with pytest.raises(ExportError, match=r"converts llama, mistral, qwen2 language models, not 'gpt2'") as info:
        exported_gguf(LanguageModel(gpt2, "gpt2", tmp_path, None), "float16")
    assert "\n" not in str(info.value)
    with pytest.raises(ExportError, match=r"precision 'int3' is unknown; choose one of float16, float32, q8_0"):
        exported_gguf(LanguageModel(gpt2, "gpt2", tmp_path, None), "int3")
    assert not list(tmp_path.iterdir())


def test_a_sliding_window_inside_the_context_is_refused():
    from transformers import MistralConfig

    runtime = get_llm_runtime("llama.cpp")
    with pytest.raises(ConfigError, match=r"attends within a 8-token sliding window, which the llama.cpp runtime"):
        runtime.check_usable(MistralConfig(sliding_window=8))
    with pytest.raises(ConfigError, match="a 512-token sliding window"):
        runtime.check_usable(MistralConfig(sliding_window=512, max_position_embeddings=1024))
    if HAS_LLAMA_CPP:  # a window as long as the context (Mistral-7B's 4096, or all positions) changes nothing
        runtime.check_usable(MistralConfig(sliding_window=4096))
        runtime.check_usable(MistralConfig(sliding_window=512, max_position_embeddings=512))


def test_the_context_is_the_models_positions_up_to_4096():
    from transformers import LlamaConfig

    from hiprune.runtime.llm.llamacpp import context_for

    assert context_for(LlamaConfig(max_position_embeddings=1024)) == 1024
    assert context_for(LlamaConfig(max_position_embeddings=32768)) == 4096


def test_export_is_cached_by_key_and_precision(tiny_lm, lm):
    path = exported_gguf(lm, "float32")
    stamp = path.stat().st_mtime_ns
    assert exported_gguf(lm, "float32") == path and path.stat().st_mtime_ns == stamp
    assert path.parent == cache_path(lm.cache_dir, lm.key, "float32") != cache_path(lm.cache_dir, lm.key, "q8_0")


def test_runtime_without_llama_cpp_says_how_to_install(lm, monkeypatch):
    import sys

    from hiprune.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what an environment without the extra sees
    with pytest.raises(BackendUnavailableError, match=r"pip install 'hiprune-export\[llamacpp\]'"):
        get_llm_runtime("llama.cpp")(lm)


def _embeds(length: int, seed: int) -> torch.Tensor:
    return torch.randn(1, length, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def llama_cpp_llm(lm):
    if not HAS_LLAMA_CPP:
        pytest.skip("llama-cpp-python is not installed (the optional llamacpp extra)")
    return get_llm_runtime("llama.cpp")(lm, dtype="float32")


@pytest.mark.usefixtures("llama_cpp_llm")
class TestLlamaCpp:
    pytestmark = needs_llama_cpp

    def test_prefill_logits_and_greedy_ids_match_transformers(self, tiny_lm, llama_cpp_llm):
        embeds = _embeds(11, seed=1)
        with torch.no_grad():
            reference_logits = tiny_lm(inputs_embeds=embeds).logits[0, -1]
            reference_ids = tiny_lm.generate(
                inputs_embeds=embeds, attention_mask=torch.ones(1, 11, dtype=torch.long), max_new_tokens=12,
                do_sample=False, eos_token_id=None, pad_token_id=0,
            )[0].tolist()  # fmt: skip
        prefill = llama_cpp_llm.prefill(embeds)
        difference = (prefill.logits - reference_logits).abs().max()
        assert difference <= 1e-3, difference
        assert llama_cpp_llm.decode(prefill, 12) == reference_ids and len(reference_ids) == 12

    def test_qwen2_matches_transformers(self, tiny_qwen2):
        runtime = get_llm_runtime("llama.cpp")(tiny_qwen2, dtype="float32")
        embeds = _embeds(10, seed=11)
        with torch.no_grad():
            reference = tiny_qwen2.model(inputs_embeds=embeds).logits[0, -1]
        ours = runtime.prefill(embeds)
        assert (ours.logits - reference).abs().max() <= 1e-3
        hf = get_llm_runtime("transformers")(tiny_qwen2)
        assert runtime.decode(ours, 10) == hf.decode(hf.prefill(embeds), 10)
        runtime.close()

    def test_a_cached_export_runs_without_loading_the_model(self, lm, llama_cpp_llm):
        fail = lambda: pytest.fail("the torch model was loaded")  # noqa: E731
        unloadable = LanguageModel(None, lm.key, lm.cache_dir, None, config=lm.config, loader=fail)
        again = get_llm_runtime("llama.cpp")(unloadable, dtype="float32")
        embeds, ids = _embeds(8, seed=12), torch.tensor([[5, 77, 3]])
        assert torch.equal(again.prefill(embeds).logits, llama_cpp_llm.prefill(embeds).logits)
        assert torch.equal(again.embed(ids), lm.model.get_input_embeddings()(ids).detach())
        assert not unloadable.loaded
        again.close()

    def test_the_context_bounds_the_prompt_and_the_decode(self, lm):
        small = get_llm_runtime("llama.cpp")(lm, dtype="float32", context=16)
        with pytest.raises(ConfigError, match="the prompt has 16 tokens; the llama.cpp context holds 16"):
            small.prefill(_embeds(16, seed=1))
        tokens = small.decode(small.prefill(_embeds(10, seed=1)), 12)
        assert len(tokens) == 7 and small.note == "decoding stopped at 7 tokens: the llama.cpp context (16) is full"
        small.close()
        with pytest.raises(ConfigError, match="runtime is closed"):  # a chain that borrowed it, after its owner
            small.prefill(_embeds(4, seed=1))

    def test_a_second_prefill_starts_from_an_empty_cache(self, llama_cpp_llm):
        first = llama_cpp_llm.decode(llama_cpp_llm.prefill(_embeds(9, seed=4)), 6)
        llama_cpp_llm.decode(llama_cpp_llm.prefill(_embeds(5, seed=8)), 6)
        again = llama_cpp_llm.prefill(_embeds(9, seed=4))
        assert llama_cpp_llm.decode(again, 6) == first

    def test_the_latest_prefill_decodes_again_and_an_older_one_is_refused(self, llama_cpp_llm):
        older = llama_cpp_llm.prefill(_embeds(7, seed=6))
        latest = llama_cpp_llm.prefill(_embeds(5, seed=9))
        assert llama_cpp_llm.decode(latest, 6) == llama_cpp_llm.decode(latest, 6)
        with pytest.raises(ConfigError, match="replaced by a later one"):
            llama_cpp_llm.decode(older, 6)

    def test_decode_stops_at_eos(self, llama_cpp_llm):
        free = llama_cpp_llm.decode(llama_cpp_llm.prefill(_embeds(6, seed=2)), 8)
        llama_cpp_llm.eos_token_id = free[3]
        try:
            stopped = llama_cpp_llm.decode(llama_cpp_llm.prefill(_embeds(6, seed=2)), 8)
        finally:
            llama_cpp_llm.eos_token_id = None
        assert stopped == free[: free.index(free[3]) + 1]

    def test_float16_gives_the_float32_ids_and_q8_0_its_first_token(self, lm, llama_cpp_llm):
        embeds = _embeds(9, seed=7)
        reference = llama_cpp_llm.prefill(embeds)
        reference_ids, scale = llama_cpp_llm.decode(reference, 8), reference.logits.abs().max()
        for precision, bound in (("float16", 2e-3), ("q8_0", 2e-2)):
            other = get_llm_runtime("llama.cpp")(lm, dtype=precision)
            ours = other.prefill(embeds)
            difference = (ours.logits - reference.logits).abs().max() / scale
            assert 0 < difference <= bound, (precision, difference)  # rounded, by about its precision
            assert ours.first_token == reference.first_token, precision
            if precision == "float16":  # q8_0's rounding may tip a later greedy step of this random model
                assert other.decode(ours, 8) == reference_ids
            other.close()

    def test_chain_with_llama_cpp_generates_what_transformers_does(self, tiny_vlm, photo, tmp_path):
        from hiprune.api import ExportRequest, export
        from hiprune.config import HiPruneConfig
        from hiprune.runtime.chain import Chain

        artifact = tmp_path / "k8"
        export(ExportRequest(hiprune=HiPruneConfig(keep=8), model=str(tiny_vlm()), output=artifact))
        runs = {}
        for runtime, options in (("transformers", {}), ("llama.cpp", {"dtype": "float32"})):
            with Chain(artifact, runtime, runtime_options=options) as chain:
                runs[runtime] = chain.run(photo(48, 1), "What is in the picture?", max_new_tokens=6)
        assert chain.runtime._ctx is None  # the chain closed the llama.cpp context it opened
        assert runs["llama.cpp"].generated_ids == runs["transformers"].generated_ids
        assert runs["llama.cpp"].kept_tokens == 8 and runs["llama.cpp"].llm_runtime == "llama.cpp"
