"""The chain against transformers' own LLaVA: greedy ids and first-token logits, full and pruned artifacts."""

from __future__ import annotations

import functools
import json
import sys

import numpy as np
import pytest
import torch
from oracle import paper_select, reference_embeds, reference_scores

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.runtime.chain import Chain
from hiprune.runtime.llm.loading import checkpoint_digest
from hiprune.runtime.preprocess import preprocess

PROMPT = "What is in the picture?"
NEW_TOKENS = 8


@functools.cache
def _text_and_images(path: str):
    from transformers import AutoImageProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)


def _generate(model, tokenizer, **inputs):
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, inputs["input_ids"].shape[1] :] if "input_ids" in inputs else out.sequences[0]
    return new.tolist(), out.logits[0][0].float()


def _chain_ids_and_logits(chain: Chain, image):
    embeds = chain.splice(PROMPT, chain.encode(chain.preprocess(image)))
    prefill = chain.runtime.prefill(embeds)
    logits = prefill.logits.clone()
    return chain.runtime.decode(prefill, NEW_TOKENS), logits


@pytest.fixture(scope="module", params=["image-processor", "processor"])
def full_artifact(request, tiny_vlm, tmp_path_factory):
    """A --no-prune artifact of a checkpoint saved with its image processor alone (``preprocessor_config.json``) or
    with transformers 5's ``LlavaProcessor`` (``processor_config.json``, the image processor nested inside)."""
    path = tiny_vlm(image_size=48, layout=request.param)
    out = tmp_path_factory.mktemp("full") / "a"
    export(ExportRequest(hiprune=HiPruneConfig(prune=False), model=str(path), output=out))
    return path, out


def _saved_image_processor_settings(path) -> dict:
    """The image processor's settings as the checkpoint holds them, read here without the project's code."""
    if (path / "preprocessor_config.json").is_file():
        return json.loads((path / "preprocessor_config.json").read_text())
    return json.loads((path / "processor_config.json").read_text())["image_processor"]


def test_full_artifact_matches_llava_generate(full_artifact, photo_file, reference_model):
    """--no-prune artifact + transformers runtime = LlavaForConditionalGeneration.generate on the same image, for
    either way of saving the checkpoint's processor."""
    from transformers import LlavaProcessor

    path, artifact = full_artifact
    model, (tokenizer, processor) = reference_model(path), _text_and_images(str(path))
    llava = LlavaProcessor(
        processor, tokenizer, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1
    )
    inputs = llava(images=str(photo_file), text=f"USER: <image>\n{PROMPT} ASSISTANT:", return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 36
    want_ids, want_logits = _generate(model, tokenizer, **inputs)
    with Chain(artifact) as chain:
        got_ids, got_logits = _chain_ids_and_logits(chain, photo_file)
        result = chain.run(photo_file, PROMPT, NEW_TOKENS)
    assert len(want_ids) > 1
    assert got_ids == want_ids and result.generated_ids == want_ids
    assert (got_logits - want_logits).abs().max() <= 1e-4
    assert result.kept_tokens == 36 and result.prompt_tokens == inputs["input_ids"].shape[1]
    assert result.text == tokenizer.decode(want_ids, skip_special_tokens=True)
    assert all(value is not None and value >= 0 for value in result.timings.as_dict().values())
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["preprocessing"] == {"image_processor": "preprocessor_config.json", "image_seq_length": 36}
    assert json.loads((artifact / "preprocessor_config.json").read_text()) == _saved_image_processor_settings(path)
    assert manifest["language_model"]["checkpoint_digest"] == checkpoint_digest(path)


@pytest.fixture(scope="module")
def pruned_artifact(tiny_vlm, tmp_path_factory):
    path = tiny_vlm(image_size=48)
    out = tmp_path_factory.mktemp("pruned") / "a"
    return path, export(ExportRequest(hiprune=HiPruneConfig(keep=10, alpha=0.5), model=str(path), output=out))


def _oracle(model, tokenizer, pixel_values, manifest_hiprune):
    """The paper loop's kept indices, and HF LLaVA's greedy ids and first logits with those tokens spliced in."""
    h = manifest_hiprune
    keep, alpha = h["keep"], h["alpha"]
    with torch.no_grad():
        s_obj, s_deep, hidden = reference_scores(model, pixel_values, h["object_layer"], h["deep_layer"])
        indices = paper_select(s_obj, s_deep, keep, alpha, 6, "paper")
        kept = reference_embeds(model, pixel_values, indices, model.config.vision_feature_layer, hidden)
    ids = tokenizer(f"USER: <image>\n{PROMPT} ASSISTANT:")["input_ids"]
    at = ids.index(model.config.image_token_id)
    input_ids = torch.tensor([ids[:at] + [model.config.image_token_id] * keep + ids[at + 1 :]])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(input_ids).masked_scatter(
            (input_ids == model.config.image_token_id)[..., None], kept
        )
    want_ids, want_logits = _generate(model, tokenizer, inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids))
    return indices, want_ids, want_logits


@pytest.mark.parametrize("encoder", ["auto", "torch"])
def test_pruned_artifact_matches_llava_fed_oracle_tokens(pruned_artifact, photo, encoder, reference_model):
    """Pruned artifact = HF LLaVA given the paper-loop oracle's kept projected features at K placeholders."""
    path, result = pruned_artifact
    model, (tokenizer, processor) = reference_model(path), _text_and_images(str(path))
    image = photo(80, seed=7)
    pixel_values = torch.from_numpy(processor(images=image, return_tensors="np")["pixel_values"])
    indices, want_ids, want_logits = _oracle(model, tokenizer, pixel_values, result.manifest["hiprune"])
    with Chain(result.output, encoder=encoder) as chain:
        got = chain.runner.infer({"pixel_values": chain.preprocess(image)})
        got_ids, got_logits = _chain_ids_and_logits(chain, image)
    np.testing.assert_array_equal(got["indices"], indices.numpy())
    assert got_ids == want_ids and len(want_ids) > 1
    assert (got_logits - want_logits).abs().max() <= 1e-4


def test_preprocessing_on_the_encoders_device_matches_the_oracle(pruned_artifact, photo, reference_model):
    """The PyTorch runner's path on CUDA, here on the CPU: pixel values made as tensors by the processor's
    torchvision backend on the runner's device, straight into the encoder; the oracle gets that backend's pixels."""
    pytest.importorskip("torchvision")
    from hiprune.runtime.preprocess import on_device

    path, result = pruned_artifact
    model, (tokenizer, processor) = reference_model(path), _text_and_images(str(path))
    twin, _ = on_device(processor)
    image = photo(80, seed=7)
    pixel_values = torch.from_numpy(twin(images=image, return_tensors="np")["pixel_values"])
    indices, want_ids, want_logits = _oracle(model, tokenizer, pixel_values, result.manifest["hiprune"])
    with Chain(result.output, encoder="torch") as chain:
        assert chain.pixel_device is None and chain.preprocess_on("cpu")
        assert chain.preprocess_backend == f"{type(twin).__name__} on cpu"
        made = chain.preprocess(image)
        got = chain.runner.infer_torch(made)
        got_ids, got_logits = _chain_ids_and_logits(chain, image)
    assert isinstance(made, torch.Tensor) and torch.equal(made, pixel_values)
    np.testing.assert_array_equal(got[1].numpy(), indices.numpy())
    assert got_ids == want_ids and len(want_ids) > 1
    assert (got_logits - want_logits).abs().max() <= 1e-4


def test_without_torchvision_images_stay_on_the_host_and_the_chain_says_why(pruned_artifact, photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now raises ImportError
    _, result = pruned_artifact
    with Chain(result.output, encoder="torch") as chain:
        assert not chain.preprocess_on("cpu")
        made = chain.preprocess(photo(80, seed=7))
        backend, note = chain.preprocess_backend, chain.preprocess_note
    assert isinstance(made, np.ndarray) and chain.pixel_device is None
    assert backend.endswith(" on host") and note.startswith("host preprocessing: torchvision cannot be imported")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_session.sh runs it there)")
def test_cuda_chain_preprocesses_on_the_device_and_keeps_the_host_tokens(pruned_artifact, photo):
    """On CUDA the PyTorch encoder's chain makes its pixels on the GPU (torchvision backend, probe-checked):
    they match the host processor's, and the encoder keeps the same tokens from them."""
    pytest.importorskip("torchvision")
    _, result = pruned_artifact
    image = photo(80, seed=7)
    with Chain(result.output, device="cuda", encoder="torch") as chain:
        assert (chain.pixel_device, chain.preprocess_note) == ("cuda", None), chain.preprocess_note
        made = chain.preprocess(image)
        host = torch.from_numpy(preprocess(chain.processor, image, chain.input_shape)).cuda()
        assert made.device.type == "cuda" and (made - host).abs().max() <= 0.08
        np.testing.assert_array_equal(chain.runner.infer_torch(made)[1].cpu(), chain.runner.infer_torch(host)[1].cpu())
        assert len(chain.run(image, PROMPT, 4).generated_ids) >= 1


def test_static_cache_path_matches_dynamic(full_artifact, photo):
    """The CUDA path's static-cache step logic (mask, positions, cache counter), run eagerly on the CPU."""
    path, artifact = full_artifact
    image = photo(64, seed=2)
    with Chain(artifact) as dynamic:
        want_ids, want_logits = _chain_ids_and_logits(dynamic, image)
        options = {"static": True, "max_cache_len": 96}
        with Chain(artifact, runtime_options=options) as static:
            got_ids, got_logits = _chain_ids_and_logits(static, image)
            again_ids, _ = _chain_ids_and_logits(static, image)  # a second prefill restarts the cache
    assert got_ids == want_ids == again_ids
    assert (got_logits - want_logits).abs().max() <= 1e-4


LLAVA_HF_TEMPLATE = (  # llava-hf's chat template, generation markers left out
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@pytest.mark.parametrize("template", [None, LLAVA_HF_TEMPLATE, "<s>" + LLAVA_HF_TEMPLATE])
def test_prompt_format(template):
    """Chat template when there is one (BOS once), else LLaVA-1.5's format; exactly one image token."""
    from hiprune.errors import ConfigError
    from hiprune.runtime.chain import format_prompt_ids
    from hiprune.runtime.defaults import build_char_tokenizer
    from hiprune.runtime.llm.loading import TextSide

    text = TextSide(build_char_tokenizer(128, 127), 127, template)
    ids = format_prompt_ids(text, "Why?")
    assert ids[0] == 1 and ids.count(1) == 1 and ids.count(127) == 1
    assert text.tokenizer.decode(ids) == "<s>USER: <image>\nWhy? ASSISTANT:"
    with pytest.raises(ConfigError, match="leave it out"):
        format_prompt_ids(text, "look: <image>")


def test_static_steps_never_read_tensors_on_host(full_artifact, monkeypatch):
    """What CUDA-graph capture needs: the static prefill and decode bodies never pull a tensor value to Python."""
    from hiprune.runtime.llm.hf import HfLLM
    from hiprune.runtime.llm.loading import load_language_model

    path, artifact = full_artifact
    lm, _ = load_language_model(str(path), artifact, None, "cpu", "float32")
    runtime = HfLLM(lm, "cpu", static=True, max_cache_len=32)
    embeds = torch.randn(1, 9, runtime.embed_dim)
    runtime.decode(runtime.prefill(embeds), 2)  # the cache's lazy allocation happens outside the bodies
    reads: list[str] = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _n=name, _o=original, **k: reads.append(_n) or _o(self, *a, **k)
        )
    with torch.no_grad():
        runtime._prefill_body(embeds, torch.arange(9)[None])
        runtime._decode_body()
    monkeypatch.undo()
    assert reads == []
